/* The function table's `required` column, read back by Python.
 *
 * build_ffi.py writes sc_api_required_flags from _cffi_src/libssl_api.py's API list (the
 * one list of the libssl functions sesscache calls, and of which ones every copy must
 * have) next to the sc_api struct it makes from the same list. sesscache._instances reads
 * it back (sc_api_required) to decide which missing functions refuse a copy, and checks
 * a filled slot with sc_api_first_missing. */
#include "sesscache.h"

#define SC_API_FIELDS ((int)sizeof(sc_api_required_flags))

/* 1 when field i of sc_api is required, 0 when optional, -1 past the end. */
int sc_api_required(int field)
{
    return field >= 0 && field < SC_API_FIELDS ? sc_api_required_flags[field] : -1;
}

/* The first required field left NULL in a slot, or -1. The table is read as an array of
 * function pointers, which every field is. */
int sc_api_first_missing(int slot)
{
    int i;
    if (sc_api_slot(slot) == NULL)
        return 0;
    for (i = 0; i < SC_API_FIELDS; i++) {
        void *field;
        memcpy(&field, (const char *)sc_api_slot(slot) + (size_t)i * sizeof(void *), sizeof(field));
        if (sc_api_required_flags[i] && field == NULL)
            return i;
    }
    return -1;
}

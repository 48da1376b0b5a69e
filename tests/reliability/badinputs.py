"""The bad inputs of the table in BAD_INPUTS.md: what each is, where it enters, what it gets.

``CASES`` go through SessionCache's get path in a real handshake (the store hands the
cache what the case makes); ``ROWS`` is the whole table, including inputs proven by other
tests (named in the last column). ``render()`` writes the table; a test keeps the file
equal to it, so the table never says what the tests do not check.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

from sesscache import Session
from sesscache._binding import lib
from tests.reliability.hello import with_session_id

FULL = "full handshake"
RESUMED = "RESUMED"


@dataclass
class Row:
    input: str
    path: str
    outcome: str
    counted: str
    test: str
    finding: bool = False


@dataclass
class Case:
    """One input through the cache's get path: ``make(env)`` puts it in the store (and may
    choose the session the client offers); the handshake must end as ``handshake`` (per
    stack where they differ) with ``counter`` incremented."""

    name: str
    input: str
    make: Callable
    handshake: str
    counter: Optional[str]
    sealed: bool = False
    outcome: str = ""
    finding: bool = False
    per_stack: Dict[str, str] = field(default_factory=dict)

    def expected(self, stack_name: str) -> str:
        return self.per_stack.get(stack_name, self.handshake)

    def row(self) -> Row:
        path = "SessionCache get (store returns it)" + (", sealed" if self.sealed else "")
        return Row(self.input, path, self.outcome or self.handshake, self.counter or "nothing",
                   f"test_bad_inputs.py::test_bad_stored_value[*-{self.name}]", self.finding)


# --- what the store returns -------------------------------------------------------------------

def other_version(value: bytes, sealed: bool) -> bool:
    """Whether the cache reads ``value`` as another sesscache version's session (a quiet
    miss, issue 23 item 8): sealing's format bytes 2-15, the envelope's 0xE2-0xEF."""
    if sealed:
        return bool(value) and 2 <= value[0] <= 15
    return len(value) > 26 and 0xE2 <= value[0] <= 0xEF


def envelope(env, version: Optional[int] = None) -> bytes:
    """The cache's unsealed envelope around the real session, in the layout cache.py writes."""
    from sesscache.cache import _ENVELOPE, _ENVELOPE_VERSION

    version = _ENVELOPE_VERSION if version is None else version
    return _ENVELOPE.pack(version, env.origin, env.certificate, len(env.name)) + env.name + env.der


def _wrap(env, origin, name, der, key=None):
    return env.cache._wrap(key or env.key, origin, name, env.certificate, der)


def _empty(env):
    return b""


def _format_2(env):
    return envelope(env, version=2)


def _id_0(env):
    return _wrap(env, env.origin, env.name, with_session_id(env.der, b""))


def _id_33(env):
    return _wrap(env, env.origin, env.name, with_session_id(env.der, b"\x07" * 33))


def _other_session(env):
    return env.other_blob_for(env.key)


def _huge(env):
    return b"\x30" * (2 << 20)


def _trailing(env):
    return _wrap(env, env.origin, env.name, env.der + b"\x00" * 20000)


def _lifetime_over(env):
    return _wrap(env, env.origin - 3601, env.name, env.der)


def _openssl_expired(env):
    """Fresh by the cache's clock (origin now) but expired by OpenSSL's (time + timeout)."""
    session = Session.from_bytes(env.der, env.server)
    lib.sc_session_set_time(session.libssl.slot, session._ptr, int(time.time()) - 1000)
    session.libssl.api.SSL_SESSION_set_timeout(session._ptr, 10)
    der = session.to_bytes()
    session.close()
    return _wrap(env, int(time.time()), env.name, der)


def _other_sid_ctx(env):
    """The blob another service (another session id context) stored, copied by someone
    with write access to the store under this service's key for the same session id."""
    return env.foreign_blob_moved()


def _unsealed_into_sealed(env):
    return envelope(env)


def _sealed_into_unsealed(env):
    from sesscache.sealing import Sealer, generate_key

    return Sealer([generate_key()]).seal(env.key, envelope(env))


def _retired_key(env):
    """Sealed with a key the cache no longer holds (rotated out)."""
    from sesscache.sealing import Sealer

    return Sealer([env.retired_key]).seal(env.key, env.plain_blob)


def _bytearray(env):
    return bytearray(env.blob)


def _text(env):
    return env.blob.decode("latin-1")


CASES = [
    Case("empty", "empty value (b\"\")", _empty, FULL, "rejected"),
    Case("format-2", "envelope of another format version", _format_2, FULL, "rejected"),
    Case("id-0", "stored DER whose session id is 0 bytes", _id_0, FULL, "rejected",
         outcome="full handshake (the id is not the one asked for)"),
    Case("id-33", "stored DER whose session id is 33 bytes", _id_33, FULL, "rejected",
         outcome="full handshake (d2i_SSL_SESSION refuses it)"),
    Case("other-session", "another session's blob under this key", _other_session, FULL, "rejected",
         outcome="full handshake (the session id is not the key's)"),
    Case("huge", "2 MiB value", _huge, FULL, "rejected",
         outcome="full handshake, refused before opening it (larger than max_session_size allows)"),
    Case("trailing", "real session followed by 20 KB", _trailing, FULL, "rejected"),
    Case("lifetime-over", "session past the cache's lifetime (origin + lifetime)", _lifetime_over, FULL, "expired"),
    Case("openssl-expired", "session fresh for the cache but past its own time + timeout", _openssl_expired,
         FULL, "expired", outcome="full handshake (refused in the callback, as OpenSSL would after it)"),
    Case("other-sid-ctx", "another service's blob (other session id context) copied under this key",
         _other_sid_ctx, FULL, "rejected", outcome="full handshake (another session id context)"),
    Case("other-sid-ctx-sealed", "the same, sealed", _other_sid_ctx, FULL, "rejected", sealed=True,
         outcome="full handshake (the seal binds the blob to its store key)"),
    Case("plain-in-sealed", "unsealed blob in a sealed cache", _unsealed_into_sealed, FULL, "rejected",
         sealed=True),
    Case("sealed-in-plain", "sealed blob in an unsealed cache", _sealed_into_unsealed, FULL, "rejected",
         outcome="full handshake (a sealed blob's format byte is not the envelope's)"),
    Case("retired-key", "blob sealed with a retired key", _retired_key, FULL, "rejected", sealed=True),
    Case("bytearray", "bytearray instead of bytes (a custom store)", _bytearray, RESUMED, "hits",
         outcome="resumed (any bytes-like value is accepted)"),
    Case("text-plain", "str instead of bytes (a buggy custom store)", _text, FULL, "errors",
         outcome="full handshake, counted as a store error"),
    Case("text-sealed", "str instead of bytes (a buggy custom store)", _text, FULL, "errors", sealed=True,
         outcome="full handshake, counted as a store error"),
]


# --- the rows proven elsewhere -----------------------------------------------------------------

OTHER_ROWS = [
    Row("random bytes (hypothesis, up to 2 KB)", "SessionCache get, plain and sealed", FULL,
        "rejected (expired when they happen to read as an old envelope)",
        "test_bad_inputs.py::test_random_stored_values"),
    Row("truncations of a real blob at every length", "SessionCache get, plain", FULL, "rejected",
        "test_bad_inputs.py::test_every_truncation_of_a_stored_blob"),
    Row("real DER with bytes flipped, cut, inserted (hypothesis)", "SessionCache get, plain",
        "full handshake; or, when the mutation leaves a parsable session with the same id, resumed, "
        "or a failed handshake if the master key was changed (unsealed stores only: a store writer "
        "can break handshakes, sealing stops it)", "rejected / hits",
        "test_bad_inputs.py::test_mutated_stored_der"),
    Row("sealed blob with a bit flipped, truncated, swapped with another key's, or garbage",
        "SessionCache get, sealed", FULL, "rejected", "cache/test_cache.py::test_tampered_blobs_are_a_counted_miss"),
    Row("blob sealed with another deployment's key", "SessionCache get, sealed", FULL, "rejected",
        "cache/test_cache.py::test_sealed_sessions"),
    Row("sealed value tampered (header, nonce, middle, tag), truncated, cut by one byte, extended, "
        "sealed with another key or for another store key, a truncated envelope sealed properly, "
        "another sealing format, not sealed", "the C fast path's get over MemoryStore, sealed (seal.c)",
        "full handshake: C refuses and hands the lookup to Python, which decides as the Python path does",
        "rejected (another format: misses)",
        "cache/test_sealed_fast_path.py::test_bad_sealed_values_are_a_counted_miss_in_c_as_in_python"),
    Row("oversize new session (> max_session_size)", "SessionCache new", "not stored", "oversize",
        "cache/test_cache.py::test_oversize_sessions_are_counted_and_skipped"),
    Row("random / mutated DER (hypothesis)", "Session.from_bytes", "SessionError (or a valid Session)", "-",
        "binding/test_session.py::test_random_bytes_never_crash, test_mutated_sessions_never_crash"),
    Row("every truncation of a real DER", "Session.from_bytes", "SessionError", "-",
        "test_bad_inputs.py::test_every_truncation_through_from_bytes"),
    Row("DER with a 0-byte session id", "Session.from_bytes", "accepted (a Session with id b\"\")", "-",
        "test_bad_inputs.py::test_session_ids_of_odd_lengths_through_from_bytes"),
    Row("DER with a 33-byte session id", "Session.from_bytes", "SessionError", "-",
        "test_bad_inputs.py::test_session_ids_of_odd_lengths_through_from_bytes"),
    Row("more than 1 MiB", "Session.from_bytes", "SessionError before parsing", "-",
        "binding/test_session.py::test_oversized_input_is_refused_before_parsing"),
    Row("DER with a 0- or 33-byte session id", "raw get callback returns it",
        "full handshake (pyOpenSSL: SessionError raised from do_handshake, by design)", "-",
        "test_bad_inputs.py::test_raw_get_callback_returning_odd_ids"),
    Row("exception, wrong type, corrupt, truncated, other id", "raw get callback", 
        "full handshake (pyOpenSSL: the error is raised from do_handshake, by design)", "-",
        "binding/test_callbacks.py::test_bad_get_callbacks_fall_back_to_a_full_handshake"),
    Row("TLS 1.2 ClientHello with a 33 to 255-byte session id", "network", "alert (length mismatch) "
        "before any callback", "-", "test_bad_inputs.py::test_client_hello_session_ids"),
    Row("TLS 1.2 ClientHello with an empty session id", "network", "full handshake, no lookup", "-",
        "test_bad_inputs.py::test_client_hello_session_ids"),
    Row("TLS 1.3 PSK identity of 0 bytes", "network", "alert (bad extension) before any callback", "-",
        "test_bad_inputs.py::test_client_hello_session_ids"),
    Row("TLS 1.3 PSK identity of 1, 33, 300 or 4000 bytes", "network", "full handshake, no lookup "
        "(OpenSSL looks up 32-byte identities only)", "-", "test_bad_inputs.py::test_client_hello_session_ids"),
    Row("SNI host name of another name / no SNI, internal_cache=False", "network", FULL, "rejected",
        "cache/test_cache.py::test_a_session_is_never_resumed_for_another_server_name"),
    Row("SNI host name of another name, every cache mode (OpenSSL's internal cache in front, "
        "attach()'s default; internal_cache=False; sesscache.aio) and topology (one context; "
        "virtual hosts switched by an SNI callback), TLS 1.2 and 1.3", "network",
        "full handshake (until 3493e9f, with the internal cache in front, it RESUMED: OpenSSL's "
        "cache never compares names; now each connection's session id context is bound to the "
        "name asked and OpenSSL itself refuses)", "rejected",
        "test_sni_every_mode.py::test_a_session_resumes_for_its_own_name_only, "
        "test_aio_resumes_for_its_own_name_only"),
    Row("a ticket (tickets on, OpenSSL's default: TLS 1.2 tickets, TLS 1.3 stateless tickets) "
        "made for another SNI name", "network", "full handshake (the bound session id context "
        "is inside the ticket's session; OpenSSL refuses it)", "nothing (no cache is asked)",
        "test_sni_every_mode.py::test_tickets_on_openssls_default_never_resume_for_another_name"),
    Row("SNI host name absent, empty, 256 or 300 bytes, or another name, internal cache in front "
        "(TLS 1.2 and 1.3)", "network", "full handshake (until 3493e9f it RESUMED)", "rejected",
        "test_sni_every_mode.py::test_unreadable_or_other_names_with_the_internal_cache_in_front"),
    Row("SNI host name empty, or 256+ bytes (TLS 1.2), internal_cache=False", "network",
        "full handshake (until dbae585 it RESUMED: the cache skipped its SNI check for a name it "
        "could not read, and OpenSSL skips its own length check on a TLS 1.2 resumption)", "rejected",
        "test_security.py::test_unreadable_server_names_are_refused"),
    Row("SNI host name empty (TLS 1.3), internal_cache=False", "network",
        "full handshake (until dbae585 it RESUMED)", "rejected",
        "test_security.py::test_unreadable_server_names_are_refused"),
    Row("SNI host name of 256+ bytes (TLS 1.3), internal_cache=False", "network",
        "refused by the cache, then an alert (OpenSSL checks the length on TLS 1.3)", "rejected",
        "test_security.py::test_unreadable_server_names_are_refused"),
    Row("a copy of OpenSSL without SSL_client_hello_get0_ext (no way to read the name asked)",
        "attach / network", "attach() refuses with ConfigurationError; a context attached before "
        "resumes nothing (until 3493e9f the name check was skipped: fail open)", "rejected",
        "test_security.py::test_a_copy_of_openssl_that_cannot_read_the_server_name_fails_closed"),
    Row("session made under the certificate a context had before it was reloaded, internal cache "
        "in front", "network", "full handshake (the certificate's fingerprint is part of each "
        "connection's session id context)", "rejected",
        "test_security.py::test_a_reloaded_certificate_refuses_the_old_certificates_sessions"),
    Row("session made on another context with another certificate, one cache, internal cache in "
        "front", "network", FULL, "rejected",
        "test_security.py::test_two_contexts_with_other_certificates_sharing_one_cache"),
    Row("session made for another certificate (same names, other key), same id context and store",
        "network", "full handshake (until dbae585 it RESUMED; the envelope now carries the "
        "certificate's fingerprint)", "rejected",
        "test_security.py::test_a_session_of_another_certificate_is_refused"),
    # Configuration and lifecycle mistakes (issue 16): refused at once, with what to do.
    Row("a raw session callback (or None) set on a context a SessionCache serves",
        "set_new/get/remove_session_callback", "ConfigurationError: the cache owns the hooks; "
        "detach it first, or read cache.stats", "-",
        "cache/test_hook_ownership.py::test_a_raw_callback_on_a_cache_served_context_is_refused"),
    Row("a store without get, set or delete", "SessionCache(store)",
        "ConfigurationError naming the missing methods", "-",
        "cache/test_custom_store.py::test_a_store_missing_a_method_is_refused_when_the_cache_is_made"),
    Row("single_use over a store without an atomic pop", "SessionCache(store, single_use=True)",
        "accepted: taken with get then delete (not atomic), and a warning says so", "-",
        "cache/test_custom_store.py::test_single_use_over_a_three_method_store_resumes_once"),
    Row("assigning lifetime, max_session_size, single_use or store", "a SessionCache's attributes",
        "AttributeError (read-only: the C fast path copied them at attach)", "-",
        "cache/test_settings_fixed.py::test_settings_are_read_only"),
    Row("any call on a closed store", "get, set, delete, pop",
        "StoreError saying it was closed (in a handshake: a full handshake)", "errors",
        "stores/test_store_contract.py::test_close_is_for_good_and_idempotent"),
    Row("a session id stamped as issued moments ago that no server wrote (a forged stamp), over "
        "a network store", "network", "full handshake after waiting up to new_session_wait (0.1 s) "
        "for its write; at most max_waiting (8) lookups of a process wait at once, none for a "
        "second after a wait that found nothing (sesscache.aio likewise), the others miss at once; "
        "a paused store ends the wait", "misses (store: new_session_waits, waits_refused)",
        "stores/test_store_write_behind.py::test_waiting_lookups_are_bounded, "
        "test_after_a_fruitless_wait_none_for_a_second, test_a_paused_store_ends_the_wait; "
        "aio/test_prefetching_store.py::test_forged_recent_stamps_cost_one_wait_a_second"),
    Row("a session id stamped as issued long ago, or more than a second ahead of this host's clock",
        "network", "full handshake at once, no wait", "misses",
        "stores/test_store_write_behind.py::test_only_recent_stamped_misses_wait"),
    # Issue 23: faults the first adversarial pass found.
    Row("ticket-key ring: generation or keep 1e999, a key's not_after 1e19 or Infinity, NaN or "
        "negative times, JSON nested 100,000 deep, keys not a list or 100,000 of them, wrong types",
        "TicketKeys(store), refresh(), python -m sesscache keys show or rotate",
        "RingFormatError inside; TicketKeys serves from a local key (logged), never overwrites the "
        "entry, adopts the fleet's ring at the first refresh that reads one; the command line prints "
        "the error and exits 2", "TicketKeys.stats store_errors, local_keys",
        "ticket_keys/test_bad_rings.py::test_a_malformed_ring_never_raises_a_local_key_serves_and_the_"
        "fleet_ring_comes_back, test_keys_show_prints_a_clear_error_and_exits_non_zero"),
    Row("ticket-key ring: a SQLite row whose value is INTEGER, REAL or TEXT", "TicketKeys(store), keys show",
        "refused as not bytes: a local key, as above", "TicketKeys.stats store_errors",
        "ticket_keys/test_bad_rings.py::test_a_sqlite_row_of_another_type_never_raises"),
    Row("TLS 1.2 or 1.3 ClientHellos carrying a real ticket with one byte of its encrypted part "
        "flipped (key name intact), the connection dropped after the ServerHello",
        "the ticket-key callback (TicketKeys)", "full handshake begun; not counted as resumed "
        "(the decrypt call only marks the connection; the mark is settled once, when the "
        "handshake's outcome is known or OpenSSL frees the connection)", "TicketKeys.stats rejected",
        "ticket_keys/test_counting.py::test_tampered_tickets_dropped_after_the_server_hello_are_never_counted_resumed"),
    Row("a valid ticket whose client hangs up after the ServerHello", "the ticket-key callback (TicketKeys)",
        "not counted as resumed (the handshake never finished)", "TicketKeys.stats rejected",
        "ticket_keys/test_counting.py::test_a_valid_ticket_counts_once_its_handshake_resumed"),
    Row("a 8 MiB (or 64 MiB) value written by hand under a session's key, Redis or SQLite",
        "store get() in the handshake thread", "refused without reading it whole (Redis: GETRANGE "
        "0..max_value_bytes pipelined with EXISTS, one round trip; SQLite: length(), no page of it "
        "read): a miss, a full handshake, logged once per burst; 64 MiB: 142 ms -> 0.5 ms (Redis), "
        "126 ms -> 0.02 ms (SQLite)", "store oversize_reads; SessionCache misses",
        "stores/test_store_read_bounds.py::test_an_oversized_value_is_a_counted_miss_read_no_further_than_the_limit, "
        "test_a_poisoned_session_is_a_full_handshake_and_a_counted_refusal"),
    Row("a value over max_value_bytes in memcached (its -I raised past the store's limit)",
        "MemcachedStore.get()", "a miss after the read (memcached's item size bounds it)",
        "store oversize_reads", "stores/test_store_read_bounds.py::test_memcached_refuses_a_value_over_its_limit"),
    Row("a Redis ACL user without +getrange or +exists", "RedisStore.get()",
        "reads whole with GET, one warning naming the rights to grant", "-",
        "stores/test_store_read_bounds.py::test_acl_user_without_getrange_falls_back_to_whole_reads_and_says_what_to_grant"),
    Row("a session written by the next format version (envelope 0xE2 with a field added, plain or "
        "inside this version's seal; sealing format 2) - a rolling deploy",
        "SessionCache get", "full handshake, logged at debug level only (format bytes 0xE0-0xEF are the "
        "envelope's, 1-15 sealing's; other bytes are still refused)", "misses",
        "reliability/test_version_skew.py::test_sessions_of_the_next_format_version_are_quiet_counted_misses, "
        "test_a_format_byte_outside_the_family_is_still_refused"),
    Row("a ticket-key ring of the next format version; this version's ring under the next version's "
        "reader (format constant patched)", "TicketKeys(store), refresh()",
        "refused, logged once, a local key where there is no ring in memory; never overwritten; the other "
        "version's processes keep serving their ring", "TicketKeys.stats store_errors",
        "reliability/test_version_skew.py::test_a_ring_of_the_next_version_and_this_versions_ring_under_the_next_reader"),
    Row("a session id stamped with the next stamp format's marker (b\"sd\" instead of b\"sc\")",
        "SessionCache get over a write-behind store", "no stamp for this version: a miss at once, no wait",
        "misses", "reliability/test_version_skew.py::test_an_id_stamped_by_the_next_stamp_format_is_a_miss_without_waiting"),
    Row("any bytes, any JSON, a valid ring with any one field replaced by any JSON value (hypothesis)",
        "decode_ring, TicketKeys(store)", "a ring within its bounds or RingFormatError, nothing else; "
        "TicketKeys never raises and always has a key to encrypt with", "TicketKeys.stats store_errors",
        "ticket_keys/test_ring_properties.py"),
    Row("any SQLite column value (BLOB, TEXT, INTEGER, REAL), any Redis string or a key of another "
        "type, any raw memcached value (hypothesis)", "store get()", "the bytes up to max_value_bytes, "
        "None beyond (counted), the value as it is for other SQLite types (every decoder refuses "
        "non-bytes), StoreError for WRONGTYPE; nothing else", "store oversize_reads",
        "stores/test_store_read_properties.py"),
    Row("any bytes to the Python decoders: rings (plain, behind a header, sealed), client session values, "
        "client keys, store URLs (atheris, fuzz/fuzz_decoders.py; 1,000,000 runs once, 5,000 in every test run)",
        "decode_ring, ClientSessionCache.prepare/key_for, redacted_store_url", "the expected answers only; "
        "one finding fixed: a password-like name inside another parameter's value was shown", "-",
        "reliability/test_fuzz.py::test_fuzz_target_runs_clean[fuzz_decoders.py]; stores/test_store_urls.py::test_secrets_in_query_strings_never_shown"),
    Row("a client host whose first label has 56+ characters, a 63-character SNI name, an IDN, any str",
        "ClientSessionCache.key_for, prepare()", "a key for every (host, port, name) (JSON, no IDNA); "
        "sessions kept under the old scc1: keys are not found after the upgrade: one full "
        "handshake per server, then stored anew", "-",
        "cache/test_client_cache_keys.py::test_a_restarted_client_resumes_for_any_valid_name, "
        "test_keys_exist_for_any_text_and_differ_when_the_servers_differ, "
        "test_a_session_stored_under_the_old_key_format_is_a_miss_then_stored_anew"),
    Row("a SQLite TEXT, INTEGER or REAL value, an empty, truncated or non-DER value under a client key",
        "ClientSessionCache.prepare()", "full handshake (nothing offered), logged once per burst; "
        "the new session replaces it", "ClientSessionCache.errors",
        "cache/test_client_cache_keys.py::test_whatever_a_sqlite_row_holds_is_a_counted_miss"),
    Row("a client session envelope of the next format version (a rolling deploy)",
        "ClientSessionCache.prepare(), plain or sealed", "full handshake, nothing logged",
        "ClientSessionCache.other_format",
        "cache/test_client_cache_keys.py::test_a_session_of_the_next_format_version_is_a_quiet_counted_miss"),
    Row("ticket-key ring whose keys have all expired, its next rotation still ahead",
        "TicketKeys(store), refresh()", "rotated at once (logged), tickets resume; if the store "
        "refuses writes, a local key (logged) until a refresh can rotate it; keys() lists no expired key",
        "TicketKeys.stats rotations, local_keys",
        "ticket_keys/test_expired_ring.py"),
    Row("ticket-key ring: a custom store whose compare_and_set raises RuntimeError", "TicketKeys(store), refresh()",
        "a local key (logged with the exception's type); rotate() raises StoreError naming it",
        "TicketKeys.stats store_errors",
        "ticket_keys/test_bad_rings.py::test_a_store_whose_compare_and_set_raises_never_raises_out_of_the_constructor"),
    Row("a password or token in a store URL's query string (password=, sentinel_password=, "
        "*token*, *secret*, *key*), or in a URL the parser cannot read", "store URLs in logs, reprs, errors",
        "shown as ***, every scheme", "-",
        "stores/test_store_urls.py::test_secrets_in_query_strings_never_shown"),
]


def render() -> str:
    rows = [case.row() for case in CASES] + OTHER_ROWS
    out = [
        "# What sesscache does with bad input",
        "",
        "Every row is checked by the test named in its last column, on the three TLS stacks the",
        "suite runs (pyOpenSSL on the OpenSSL in the cryptography wheel, the stdlib `ssl` module and",
        "sesscache's own linked libssl), TLS 1.2 unless the row says otherwise. \"Counted in\" is the",
        "`SessionCache.stats` counter the input increments. Rows in **bold** are findings: behaviour",
        "the tests record as it is today, which the library should change.",
        "",
        "This file is generated from `tests/reliability/badinputs.py`",
        "(`SESSCACHE_WRITE_BAD_INPUTS=1 pytest tests/reliability/test_bad_inputs.py -k table`).",
        "",
        "| Input | Where it enters | What it gets | Counted in | Test |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        cells = [row.input, row.path, row.outcome, row.counted, f"`{row.test}`"]
        if row.finding:
            cells[2] = f"**{cells[2]}**"
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out) + "\n"

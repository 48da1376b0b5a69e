"""The ``sesscache-ssl:`` server endpoint string (see :mod:`sesscache.integrations.twisted`).

A Twisted plugin: Twisted finds it in any ``twisted/plugins`` directory on ``sys.path``. There is
deliberately no ``__init__.py`` here or in ``twisted/``: Twisted's own package stays the one that
is imported. sesscache itself is imported only when the endpoint is used.
"""
from twisted.internet.interfaces import IStreamServerEndpointStringParser
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IStreamServerEndpointStringParser)
class SesscacheSSLServerParser:
    prefix = "sesscache-ssl"

    def parseStreamServer(self, reactor, *args, **kwargs):
        from sesscache.integrations.twisted import parse_endpoint

        return parse_endpoint(reactor, *args, **kwargs)


sesscacheSSL = SesscacheSSLServerParser()

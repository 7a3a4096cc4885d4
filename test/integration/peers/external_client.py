# A client written with slixmpp, a third-party XMPP library, that logs in
# with SASL EXTERNAL and a client certificate (XEP-0178), trusting the
# server's certificate. Prints the bound JID once the session starts. Usage:
#   /usr/bin/python3 external_client.py HOST PORT JID CERT KEY SERVER_CA
import sys
import logging
from slixmpp import ClientXMPP

logging.basicConfig(level=logging.ERROR)
host, port, jid, cert, key, server_ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]


class Client(ClientXMPP):
    def __init__(self):
        super().__init__(jid, '')
        self.certfile = cert
        self.keyfile = key
        self.ca_certs = server_ca
        self['feature_mechanisms'].use_mech = 'EXTERNAL'
        self.add_event_handler('session_start', self.started)
        self.add_event_handler('failed_auth', self.failed)

    def started(self, _event):
        print('bound ' + str(self.boundjid), flush=True)
        self.disconnect()

    def failed(self, _event):
        print('failed', flush=True)
        self.disconnect()


xmpp = Client()
xmpp.connect((host, port))
xmpp.process(forever=False)

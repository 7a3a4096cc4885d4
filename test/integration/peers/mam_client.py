# A client written with slixmpp, a third-party XMPP library, that logs in
# with a password (SCRAM), trusting the server's certificate, and reads its
# message archive with slixmpp's own XEP-0313 code: the query form's fields,
# the whole archive paged forwards and backwards (RSM, two per page), the
# conversation with one JID, and the archive's metadata (#extended). Prints
# one JSON line per answer, then disconnects. Usage:
#   /usr/bin/python3 mam_client.py HOST PORT JID PASSWORD SERVER_CA PEER
import sys
import json
import logging
from slixmpp import ClientXMPP, JID

logging.basicConfig(level=logging.ERROR)
host, port, jid, password, server_ca, peer = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]


def body(msg):
    return msg['mam_result']['forwarded']['stanza']['body']


class Client(ClientXMPP):
    def __init__(self):
        super().__init__(jid, password)
        self.ca_certs = server_ca
        for plugin in ('xep_0004', 'xep_0059', 'xep_0297', 'xep_0313'):
            self.register_plugin(plugin)
        self.add_event_handler('session_start', self.started)
        self.add_event_handler('failed_auth', self.failed)

    async def started(self, _event):
        try:
            form = await self['xep_0313'].get_fields()
            print(json.dumps({'fields': [f['var'] for f in form['fields']]}), flush=True)
            forward = [body(m) async for m in self['xep_0313'].iterate(rsm={'max': 2})]
            print(json.dumps({'forward': forward}), flush=True)
            backward = [body(m) async for m in self['xep_0313'].iterate(reverse=True, rsm={'max': 2})]
            print(json.dumps({'backward': backward}), flush=True)
            conversation = [body(m) async for m in self['xep_0313'].iterate(with_jid=JID(peer), rsm={'max': 2})]
            print(json.dumps({'with': conversation}), flush=True)
            meta = await self['xep_0313'].get_archive_metadata()
            print(json.dumps({'start': meta['mam_metadata']['start']['id'], 'end': meta['mam_metadata']['end']['id']}), flush=True)
        except Exception as err:  # reported to the test, which fails on it
            print(json.dumps({'error': repr(err)}), flush=True)
        self.disconnect()

    def failed(self, _event):
        print(json.dumps({'error': 'failed_auth'}), flush=True)
        self.disconnect()


xmpp = Client()
xmpp.connect((host, port))
xmpp.process(forever=False)

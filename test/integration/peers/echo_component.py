# An external component (XEP-0114) written with slixmpp, a third-party XMPP
# library: it connects to the server's component port with its secret and
# echoes every chat message back to its sender, from the address it was sent
# to. Prints "ready" once the handshake succeeded. Usage:
#   /usr/bin/python3 echo_component.py HOST PORT DOMAIN SECRET
import sys
import logging
from slixmpp.componentxmpp import ComponentXMPP

logging.basicConfig(level=logging.ERROR)


class Echo(ComponentXMPP):
    def __init__(self, jid, secret, host, port):
        super().__init__(jid, secret, host, port)
        self.add_event_handler('session_start', self.started)
        self.add_event_handler('message', self.echo)

    def started(self, _event):
        print('ready', flush=True)

    def echo(self, msg):
        if msg['type'] in ('chat', 'normal'):
            reply = self.make_message(mto=msg['from'], mfrom=msg['to'], mbody='echo: ' + msg['body'], mtype=msg['type'])
            reply['id'] = msg['id']
            reply.send()


host, port, domain, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
xmpp = Echo(domain, secret, host, port)
xmpp.connect()
xmpp.process()

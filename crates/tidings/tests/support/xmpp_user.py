"""An XMPP user for the tests, with slixmpp (an independent client library): logs in,
approves every subscription request, answers XEP-0184 receipt requests, and reports what
happens as JSON lines on stdout; takes commands as JSON lines on stdin.

usage: xmpp_user.py JID PASSWORD HOST PORT
stdout: {"event": "ready"} | {"event": "subscribe", "from": ...}
        | {"event": "message", "from": ..., "body": ..., "id": ..., "receipt_requested": bool}
stdin:  {"op": "say", "to": JID, "body": TEXT}
        {"op": "show", "show": "available" | "away" | "xa" | "dnd"}
The server is a test server on loopback: plain connection, no TLS.
"""

import asyncio
import json
import sys

try:
    import slixmpp
except ImportError:
    sys.stderr.write("slixmpp is missing: pip install slixmpp\n")
    sys.exit(3)


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class User(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.auto_authorize = True
        self.auto_subscribe = True
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.enable_plaintext = True
        self["feature_mechanisms"].unencrypted_plain = True
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0184")
        self.register_plugin("xep_0199")
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("presence_subscribe", self.on_subscribe)

    async def start(self, _event):
        self.send_presence()
        await self.get_roster()
        out({"event": "ready"})
        asyncio.ensure_future(self.commands())

    def on_subscribe(self, pres):
        out({"event": "subscribe", "from": str(pres["from"].bare)})

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            out({
                "event": "message",
                "from": str(msg["from"].bare),
                "body": msg["body"],
                "id": msg["id"],
                "receipt_requested": msg["request_receipt"],
            })

    async def commands(self):
        loop = asyncio.get_event_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                self.disconnect()
                return
            cmd = json.loads(line)
            if cmd["op"] == "say":
                self.send_message(mto=cmd["to"], mbody=cmd["body"], mtype="chat")
            elif cmd["op"] == "show":
                if cmd["show"] == "available":
                    self.send_presence()
                else:
                    self.send_presence(pshow=cmd["show"])


def main():
    jid, password, host, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    user = User(jid, password)
    user.connect(host, port)
    asyncio.get_event_loop().run_until_complete(user.disconnected)


if __name__ == "__main__":
    main()

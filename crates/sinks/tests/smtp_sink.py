#!/usr/bin/env python3
"""A real SMTP server for the mailto tests: aiosmtpd on 127.0.0.1, writing each message it
accepts to DIR as <n>.eml (the raw message) and <n>.json (the envelope and the AUTH login).

    smtp_sink.py --port PORT --dir DIR [--auth] [--tls none|starttls|implicit
                 --cert CERT --key KEY] [--fail-rcpt "550 ..."] [--fail-data "451 ..."]

--auth accepts AUTH PLAIN and LOGIN with test:secret (and refuses anything else); with
--tls starttls the server offers STARTTLS and requires it before MAIL. --fail-rcpt and
--fail-data make the server answer RCPT or the end of DATA with the given reply.
Prints "READY <port>" on stdout once it accepts connections, then runs until killed
(or until its stdin closes, so it never outlives the test that started it).
"""

import argparse
import json
import logging
import os
import ssl
import sys
import threading
import warnings

# aiosmtpd warns about plain-text AUTH, which the tests use on purpose.
warnings.simplefilter("ignore")
logging.getLogger("mail.log").setLevel(logging.ERROR)

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword
except ImportError:
    print("aiosmtpd is missing: run `python3 -m pip install aiosmtpd`", file=sys.stderr)
    sys.exit(3)


class Sink:
    def __init__(self, directory, fail_rcpt, fail_data):
        self.directory = directory
        self.fail_rcpt = fail_rcpt
        self.fail_data = fail_data
        self.count = 0
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.fail_rcpt:
            return self.fail_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.fail_data:
            return self.fail_data
        with self.lock:
            self.count += 1
            n = self.count
        base = os.path.join(self.directory, str(n))
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        with open(base + ".json.tmp", "w") as f:
            json.dump(
                {
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": envelope.rcpt_tos,
                    "auth_login": login,
                    "tls": server.transport.get_extra_info("ssl_object") is not None,
                },
                f,
            )
        # Renamed last, so a reader never sees half a message.
        os.rename(base + ".eml.tmp", base + ".eml")
        os.rename(base + ".json.tmp", base + ".json")
        return "250 Message accepted for delivery"


def authenticator(server, session, envelope, mechanism, auth_data):
    if isinstance(auth_data, LoginPassword) and auth_data.login == b"test" and auth_data.password == b"secret":
        return AuthResult(success=True, auth_data=auth_data)
    return AuthResult(success=False, handled=False)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--auth", action="store_true")
    p.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--fail-rcpt")
    p.add_argument("--fail-data")
    args = p.parse_args()

    kwargs = {}
    context = None
    if args.tls != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    if args.tls == "starttls":
        kwargs.update(tls_context=context, require_starttls=True)
    elif args.tls == "implicit":
        kwargs.update(ssl_context=context)
    if args.auth:
        kwargs.update(
            authenticator=authenticator,
            auth_required=True,
            # Plain-text AUTH is allowed for the tests that run without TLS.
            auth_require_tls=False,
        )
    controller = Controller(
        Sink(args.dir, args.fail_rcpt, args.fail_data),
        hostname="127.0.0.1",
        port=args.port,
        server_hostname="smtp-sink.test",
        **kwargs,
    )
    controller.start()
    print(f"READY {args.port}", flush=True)
    try:
        # Ends when the parent closes our stdin (or dies).
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()

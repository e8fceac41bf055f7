"""An explicit-FTPS session with Python's ftplib under TLS 1.3, as scripts use it.

Usage: ftplib_tls.py PORT USER PASSWORD passive|active stock|readme [ROUNDS]
  stock   ftplib.FTP_TLS as shipped: data connections do not resume the
          control connection's TLS session (the server needs
          FTPS_REQUIRE_SESSION_REUSE=false);
  readme  the session-reusing subclass shown in README.md, taken from its
          python block, so the README's code is the code tested (works with
          the default FTPS_REQUIRE_SESSION_REUSE=true).
ROUNDS (default 1): how many times STOR, LIST, NLST, MLSD and RETR run, each
on its own data connection, in the one session.
Prints a JSON object of reply codes and checks; a failure (such as an SSL
error in ftplib's unwrap() of a data connection) exits non-zero with its
traceback.
"""
import ftplib
import io
import json
import os
import re
import ssl
import sys

port, user, password, mode, kind = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
rounds = int(sys.argv[6]) if len(sys.argv) > 6 else 1

if kind == "readme":
    readme = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md")
    with open(readme, encoding="utf-8") as f:
        blocks = [b for b in re.findall(r"```python\n(.*?)```", f.read(), re.S) if "class ReusingFTP_TLS(" in b]
    if len(blocks) != 1:
        sys.exit("README.md: expected one python block with class ReusingFTP_TLS, found %d" % len(blocks))
    namespace = {}
    exec(blocks[0], namespace)
    base = namespace["ReusingFTP_TLS"]
elif kind == "stock":
    base = ftplib.FTP_TLS
else:
    sys.exit("unknown client kind: " + kind)


class Recording(base):
    """Records whether each protected data connection resumed a TLS session."""

    reused = []

    def ntransfercmd(self, cmd, rest=None):
        conn, size = super().ntransfercmd(cmd, rest)
        if isinstance(conn, ssl.SSLSocket):
            self.reused.append(conn.session_reused)
        return conn, size


context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
context.minimum_version = ssl.TLSVersion.TLSv1_3
out = {}
ftp = Recording(context=context, timeout=20)
ftp.encoding = "utf-8"
out["connect"] = ftp.connect("127.0.0.1", port)[:3]
out["login"] = ftp.login(user, password)[:3]  # FTP_TLS.login() sends AUTH TLS first
out["prot"] = ftp.prot_p()[:3]
out["tls"] = ftp.sock.version()
ftp.set_pasv(mode == "passive")
name = "ftplib-%s-%s.bin" % (kind, mode)
checks = {"stor": set(), "list": set(), "list_has": set(), "nlst": set(), "mlsd": set(), "retr": set(), "same": set()}
for i in range(rounds):
    body = os.urandom(100_000 + i)
    checks["stor"].add(ftp.storbinary("STOR " + name, io.BytesIO(body))[:3])
    lines = []
    checks["list"].add(ftp.retrlines("LIST", lines.append)[:3])
    checks["list_has"].add(any(line.endswith(name) for line in lines))
    checks["nlst"].add(name in ftp.nlst())
    checks["mlsd"].add(name in [entry for entry, _ in ftp.mlsd()])
    got = io.BytesIO()
    checks["retr"].add(ftp.retrbinary("RETR " + name, got.write)[:3])
    checks["same"].add(got.getvalue() == body)
# One value per check when every round agreed, else the list of values seen.
for key, values in checks.items():
    out[key] = values.pop() if len(values) == 1 else sorted(values, key=str)
out["data_connections"] = len(ftp.reused)
out["reused"] = sorted(set(ftp.reused))
out["dele"] = ftp.delete(name)[:3]
out["quit"] = ftp.quit()[:3]
print(json.dumps(out))

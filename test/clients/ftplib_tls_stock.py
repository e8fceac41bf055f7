"""Stock ftplib.FTP_TLS, as scripts use it: no session reuse on data connections.

Usage: ftplib_tls_stock.py PORT USER PASSWORD passive|active [transfers]
With "transfers", only STOR and RETR (no listings).
Against a server with FTPS_REQUIRE_SESSION_REUSE=false. Prints a JSON object
of reply codes and checks; exits non-zero on any unexpected error.
"""
import ftplib
import io
import json
import os
import ssl
import sys

port, user, password, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
context.minimum_version = ssl.TLSVersion.TLSv1_3
out = {}
ftp = ftplib.FTP_TLS(context=context, timeout=20)
ftp.encoding = "utf-8"
out["connect"] = ftp.connect("127.0.0.1", port)[:3]
out["login"] = ftp.login(user, password)[:3]
out["prot"] = ftp.prot_p()[:3]
out["tls"] = ftp.sock.version()
ftp.set_pasv(mode == "passive")
body = os.urandom(100_000)
out["stor"] = ftp.storbinary("STOR stock.bin", io.BytesIO(body))[:3]
if sys.argv[5:] != ["transfers"]:
    lines = []
    out["list"] = ftp.retrlines("LIST", lines.append)[:3]
    out["list_has"] = any(line.endswith("stock.bin") for line in lines)
    out["nlst"] = "stock.bin" in ftp.nlst()
    out["mlsd"] = "stock.bin" in [name for name, _ in ftp.mlsd()]
got = io.BytesIO()
out["retr"] = ftp.retrbinary("RETR stock.bin", got.write)[:3]
out["same"] = got.getvalue() == body
out["quit"] = ftp.quit()[:3]
print(json.dumps(out))

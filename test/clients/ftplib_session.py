"""A full FTP session with Python's ftplib, as scripts in the wild use it.

Usage: ftplib_session.py PORT USER PASSWORD passive|active
Prints one JSON object with every reply code and what was read back;
the Node test asserts on it. Exits non-zero on any unexpected error.
"""
import hashlib
import io
import json
import os
import sys
from ftplib import FTP, error_perm

port, user, password, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
out = {}
ftp = FTP()
ftp.encoding = "utf-8"
out["connect"] = ftp.connect("127.0.0.1", port, timeout=20)[:3]
out["login"] = ftp.login(user, password)[:3]
ftp.set_pasv(mode == "passive")
out["mkd"] = ftp.mkd("py dir ü")
out["cwd"] = ftp.cwd("py dir ü")[:3]
out["pwd"] = ftp.pwd()
body = os.urandom(300_000)
out["stor"] = ftp.storbinary("STOR upload ✓.bin", io.BytesIO(body))[:3]
out["nlst"] = ftp.nlst()
lines = []
out["list"] = ftp.retrlines("LIST", lines.append)[:3]
out["list_lines"] = lines
out["mlsd"] = [[name, facts.get("type"), facts.get("size")] for name, facts in ftp.mlsd()]
out["size"] = ftp.size("upload ✓.bin")
got = io.BytesIO()
out["retr"] = ftp.retrbinary("RETR upload ✓.bin", got.write)[:3]
out["same"] = hashlib.sha256(got.getvalue()).hexdigest() == hashlib.sha256(body).hexdigest()
got = io.BytesIO()
out["retr_rest"] = ftp.retrbinary("RETR upload ✓.bin", got.write, rest=299_000)[:3]
out["rest_same"] = got.getvalue() == body[299_000:]
out["rnfr"] = ftp.sendcmd("RNFR upload ✓.bin")[:3]
out["rnto"] = ftp.sendcmd("RNTO renamed.bin")[:3]
try:
    ftp.size("upload ✓.bin")
    out["old_gone"] = False
except error_perm as e:
    out["old_gone"] = str(e)[:3] == "550"
out["dele"] = ftp.delete("renamed.bin")[:3]
out["cdup"] = ftp.sendcmd("CDUP")[:3]
out["rmd"] = ftp.rmd("py dir ü")[:3]
out["quit"] = ftp.quit()[:3]
print(json.dumps(out))

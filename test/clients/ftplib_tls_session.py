"""An explicit-FTPS session with Python's ftplib.FTP_TLS, reusing the control
connection's TLS session on data connections (what servers that require
session reuse, like vsftpd, expect; stock FTP_TLS does not do it).

Usage: ftplib_tls_session.py PORT USER PASSWORD passive|active
Prints a JSON object of reply codes and checks.
"""
import ftplib
import io
import json
import os
import ssl
import sys


class ReusingFTP_TLS(ftplib.FTP_TLS):
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        return conn, size


port, user, password, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
out = {}
ftp = ReusingFTP_TLS(context=context, timeout=20)
ftp.encoding = "utf-8"
out["connect"] = ftp.connect("127.0.0.1", port)[:3]
out["auth"] = ftp.auth()[:3]
out["login"] = ftp.login(user, password)[:3]
out["prot"] = ftp.prot_p()[:3]
ftp.set_pasv(mode == "passive")
body = os.urandom(100_000)
out["stor"] = ftp.storbinary("STOR tls-py.bin", io.BytesIO(body))[:3]
out["nlst"] = "tls-py.bin" in ftp.nlst()
got = io.BytesIO()
out["retr"] = ftp.retrbinary("RETR tls-py.bin", got.write)[:3]
out["same"] = got.getvalue() == body
out["dele"] = ftp.delete("tls-py.bin")[:3]
out["quit"] = ftp.quit()[:3]
print(json.dumps(out))

"""The bench's small-file and listing client: Python's stdlib ftplib, as the
issue's comparison used. Prints one JSON line with the timings.

  small    HOST PORT USER PASS DIR COUNT SIZE BUDGET
           COUNT STORs over one session, or as many as fit in BUDGET seconds
  phases   HOST PORT USER PASS DIR COUNT SIZE
           COUNT STORs over one session, timing each step of each: TYPE I,
           PASV, STOR until its 150 (the data connection opened meanwhile),
           the bytes until the data socket is closed, and the wait for 226
  list     HOST PORT USER PASS DIR                 one LIST, counting lines
  sessions HOST PORT USER PASS DIR SESSIONS FILES SIZE BUDGET
           SESSIONS sessions at once (logged in, then released together),
           each storing FILES files of SIZE bytes into DIR/s<n>/, none
           starting a file after BUDGET seconds

The budget keeps a pathologically slow server from stretching the run; the
rate is taken over the files done.
"""
import ftplib
import io
import json
import socket
import sys
import threading
import time


def connect(host, port, user, password):
    ftp = ftplib.FTP(timeout=300)
    ftp.connect(host, int(port))
    ftp.login(user, password)
    ftp.voidcmd("TYPE I")
    return ftp


def makedirs(ftp, path):
    """MKD each level; servers that have it already, or need none, refuse."""
    at = ""
    for part in [p for p in path.split("/") if p]:
        at += "/" + part
        try:
            ftp.mkd(at)
        except ftplib.error_perm:
            pass


def small(host, port, user, password, path, count, size, budget):
    ftp = connect(host, port, user, password)
    makedirs(ftp, path)
    body = b"x" * int(size)
    started = time.perf_counter()
    done = 0
    while done < int(count) and time.perf_counter() - started < float(budget):
        ftp.storbinary("STOR %s/f%d.bin" % (path, done), io.BytesIO(body))
        done += 1
    seconds = time.perf_counter() - started
    ftp.quit()
    return {"seconds": seconds, "files": done}


def phases(host, port, user, password, path, count, size):
    """What storbinary does, step by step, with the time of each step."""
    ftp = connect(host, port, user, password)
    makedirs(ftp, path)
    body = b"x" * int(size)
    steps = {"type": [], "pasv": [], "stor150": [], "send": [], "reply226": [], "file": []}
    started = time.perf_counter()
    for n in range(int(count)):
        t0 = time.perf_counter()
        ftp.voidcmd("TYPE I")
        t1 = time.perf_counter()
        host_, port_ = ftp.makepasv()
        t2 = time.perf_counter()
        conn = socket.create_connection((host_, port_), ftp.timeout)
        resp = ftp.sendcmd("STOR %s/f%d.bin" % (path, n))
        if resp[0] != "1":
            raise ftplib.error_reply(resp)
        t3 = time.perf_counter()
        conn.sendall(body)
        conn.close()
        t4 = time.perf_counter()
        ftp.voidresp()
        t5 = time.perf_counter()
        for key, value in zip(["type", "pasv", "stor150", "send", "reply226", "file"], [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0]):
            steps[key].append(value * 1000)
    seconds = time.perf_counter() - started
    ftp.quit()
    med = {k: sorted(v)[len(v) // 2] for k, v in steps.items()}
    return {"seconds": seconds, "files": int(count), "medianMs": med}


def listing(host, port, user, password, path):
    ftp = connect(host, port, user, password)
    lines = [0]

    def line(_text):
        lines[0] += 1

    started = time.perf_counter()
    ftp.retrlines("LIST %s" % path, line)
    seconds = time.perf_counter() - started
    ftp.quit()
    return {"seconds": seconds, "lines": lines[0]}


def sessions(host, port, user, password, path, count, files, size, budget):
    count, files = int(count), int(files)
    body = b"x" * int(size)
    ready = threading.Barrier(count + 1)
    errors = []
    done = [0]
    started = [0.0]
    lock = threading.Lock()
    setup = connect(host, port, user, password)
    makedirs(setup, path)
    for n in range(count):
        makedirs(setup, "%s/s%d" % (path, n))
    setup.quit()

    def session(n):
        ftp = None
        try:
            ftp = connect(host, port, user, password)
        except Exception as err:  # counted, the barrier still waits for this thread
            errors.append("login: %s" % err)
        ready.wait()
        if ftp is None:
            return
        try:
            for i in range(files):
                if time.perf_counter() - started[0] >= float(budget):
                    break
                ftp.storbinary("STOR %s/s%d/f%d.bin" % (path, n, i), io.BytesIO(body))
                with lock:
                    done[0] += 1
            ftp.quit()
        except Exception as err:
            errors.append(str(err))

    threads = [threading.Thread(target=session, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    started[0] = time.perf_counter()
    ready.wait()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started[0]
    return {"seconds": seconds, "files": done[0], "errors": len(errors), "firstError": errors[0] if errors else None}


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    work = {"small": small, "phases": phases, "list": listing, "sessions": sessions}[mode]
    print(json.dumps(work(*args)))


main()

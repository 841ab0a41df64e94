"""nginx basic-auth hashes: SHA-512-crypt ("$6$", as glibc crypt(3) and nginx's
auth_basic understand it) with salts derived by HMAC, so an unchanged password gives an
unchanged htpasswd line and a deploy with nothing changed uploads nothing."""
from __future__ import annotations

import hashlib
import hmac

# Implemented here (Ulrich Drepper's specification) because Python's crypt module is
# deprecated and gone in 3.13; tests check it against crypt(3).

_B64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ORDER = ((0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26),
          (6, 27, 48), (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32),
          (12, 33, 54), (34, 55, 13), (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38),
          (18, 39, 60), (40, 61, 19), (62, 20, 41))


def _b64_24(b2: int, b1: int, b0: int, n: int) -> str:
    w = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(n):
        out.append(_B64[w & 0x3F])
        w >>= 6
    return "".join(out)


def _repeat(data: bytes, length: int) -> bytes:
    return (data * (length // len(data) + 1))[:length] if data else b""


def sha512_crypt(password: str, salt: str) -> str:
    """crypt(3) with a "$6$<salt>$" setting and the default 5000 rounds."""
    pw, s = password.encode(), salt.encode()[:16]
    if any(ch not in _B64 for ch in salt[:16]) or not s:
        raise ValueError("a SHA-512-crypt salt is 1-16 characters of [./0-9A-Za-z]")
    b = hashlib.sha512(pw + s + pw).digest()
    a = hashlib.sha512(pw + s + _repeat(b, len(pw)))
    n = len(pw)
    while n:
        a.update(b if n & 1 else pw)
        n >>= 1
    c = a.digest()
    p = _repeat(hashlib.sha512(pw * len(pw)).digest(), len(pw))
    ss = _repeat(hashlib.sha512(s * (16 + c[0])).digest(), len(s))
    for r in range(5000):
        h = hashlib.sha512(p if r & 1 else c)
        if r % 3:
            h.update(ss)
        if r % 7:
            h.update(p)
        h.update(c if r & 1 else p)
        c = h.digest()
    encoded = "".join(_b64_24(c[i], c[j], c[k], 4) for i, j, k in _ORDER) + _b64_24(0, 0, c[63], 2)
    return f"$6${s.decode()}${encoded}"


def verify_sha512_crypt(password: str, hashed: str) -> bool:
    parts = hashed.split("$")
    if len(parts) != 4 or parts[1] != "6":
        return False
    return hmac.compare_digest(sha512_crypt(password, parts[2]), hashed)


def derived_salt(user: str, password: str, key: str = "") -> str:
    """16 salt characters from an HMAC: the same user and password always give the same hash
    (so the htpasswd file is stable across deploys), a new password a new salt. Keyed with a
    kit secret when given; without one (key ""), keyed with the password itself."""
    mac = hmac.new((key or password).encode(), f"celery-kit flower htpasswd\0{user}\0{password}".encode(),
                   hashlib.sha512).digest()
    return "".join(_B64[byte % 64] for byte in mac[:16])    # 256 % 64 == 0: unbiased


def htpasswd_line(user: str, password: str, salt_key: str = "") -> str:
    """`user:$6$salt$hash` for nginx's auth_basic_user_file; deterministic."""
    return f"{user}:{sha512_crypt(password, derived_salt(user, password, salt_key))}"

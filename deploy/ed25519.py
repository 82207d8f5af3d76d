"""Ed25519 signature verification (RFC 8032, 5.1.7), verify only, standard library only.

The device checks a bundle's signature with this before anything from the bundle runs, using
its system python3 (no venv, no `cryptography` yet); the host signs with `cryptography`
(deploy/signing.py), and tests/test_signing.py checks the two agree.

Points are in extended coordinates (X, Y, Z, T) with x = X/Z, y = Y/Z, x*y = T/Z on the curve
-x^2 + y^2 = 1 + d x^2 y^2 over the integers mod P.
"""

import hashlib

_P = 2 ** 255 - 19
_L = 2 ** 252 + 27742317777372353535851937790883648493      # the order of the base point
_D = -121665 * pow(121666, -1, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _point_add(p, q):
    a, b = (p[1] - p[0]) * (q[1] - q[0]) % _P, (p[1] + p[0]) * (q[1] + q[0]) % _P
    c, d = 2 * p[3] * q[3] * _D % _P, 2 * p[2] * q[2] % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return e * f % _P, g * h % _P, f * g % _P, e * h % _P


def _point_multiply(n, p):
    result = (0, 1, 1, 0)                  # the neutral element
    while n:
        if n & 1:
            result = _point_add(result, p)
        p, n = _point_add(p, p), n >> 1
    return result


def _decode_point(data):
    """The point 32 bytes encode (y, and the low bit of x in the top bit), or None if none does."""
    y, sign = int.from_bytes(data, "little") & ((1 << 255) - 1), data[31] >> 7
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, -1, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P or (x == 0 and sign):
        return None
    x = _P - x if x & 1 != sign else x
    return x, y, 1, x * y % _P


def _encode_point(p):
    z_inverse = pow(p[2], -1, _P)
    x, y = p[0] * z_inverse % _P, p[1] * z_inverse % _P
    return (y | (x & 1) << 255).to_bytes(32, "little")


_BASE = _decode_point((4 * pow(5, -1, _P) % _P).to_bytes(32, "little"))


def ed25519_verify(public_key, message, signature):
    """True if signature (64 bytes: R, S) is public_key's (32 bytes: A) signature of message:
    S < L and [S]B - [k]A encodes to R, with k = SHA-512(R || A || message) mod L."""
    point = _decode_point(public_key) if len(public_key) == 32 else None
    if point is None or len(signature) != 64:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:                            # non-canonical S: refused, as RFC 8032 requires
        return False
    k = int.from_bytes(hashlib.sha512(signature[:32] + public_key + message).digest(), "little") % _L
    minus_a = (_P - point[0], point[1], point[2], _P - point[3])
    return _encode_point(_point_add(_point_multiply(s, _BASE), _point_multiply(k, minus_a))) == signature[:32]

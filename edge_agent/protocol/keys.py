"""Device and central keys: Ed25519 for signatures, X25519 for key agreement (libsodium).

libsodium verifies Ed25519 about three times faster than OpenSSL through `cryptography`, and it
rejects non-canonical signatures and small-order keys, which the Wycheproof vectors check.
"""

from __future__ import annotations

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.signing

SEED_BYTES = 32
PUBLIC_BYTES = 32
SIGNATURE_BYTES = 64


class SigningKey:
    """An Ed25519 key held as its 32-byte seed."""

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
            raise ValueError(f"an Ed25519 seed is {SEED_BYTES} bytes")
        self._key = nacl.signing.SigningKey(seed)
        self.seed = seed
        self.public = bytes(self._key.verify_key)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    def sign(self, message: bytes) -> bytes:
        return bytes(self._key.sign(message).signature)


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """True only for a valid signature; malformed keys or signatures give False, never raise."""
    if (
        not isinstance(public, bytes)
        or not isinstance(signature, bytes)
        or len(public) != PUBLIC_BYTES
        or len(signature) != SIGNATURE_BYTES
    ):
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


class AgreementKey:
    """An X25519 key pair for deriving the TOTP secret shared by a device and central."""

    def __init__(self, private: bytes) -> None:
        if not isinstance(private, bytes) or len(private) != SEED_BYTES:
            raise ValueError(f"an X25519 private key is {SEED_BYTES} bytes")
        self._key = nacl.public.PrivateKey(private)
        self.private = private
        self.public = bytes(self._key.public_key)

    @classmethod
    def generate(cls) -> AgreementKey:
        return cls(bytes(nacl.public.PrivateKey.generate()))

    def shared(self, peer_public: bytes) -> bytes:
        """X25519(self, peer); refuses low-order peers whose result is all zeros."""
        if not isinstance(peer_public, bytes) or len(peer_public) != PUBLIC_BYTES:
            raise ValueError(f"an X25519 public key is {PUBLIC_BYTES} bytes")
        try:
            secret = nacl.bindings.crypto_scalarmult(self.private, peer_public)
        except (nacl.exceptions.RuntimeError, nacl.exceptions.CryptoError) as exc:
            raise ValueError("X25519 with a low-order public key") from exc
        if secret == bytes(32):
            raise ValueError("X25519 with a low-order public key")
        return secret

"""Credentials and TLS: what a configuration asks for, checked before
connecting, as nats-py's connect options."""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

from angzarr_es.config import NatsConfig
from angzarr_es.errors import ConfigError

__all__ = ["NO_TLS", "auth_options", "check_credentials", "tls_context", "tls_wanted"]


NO_TLS = (
    "nats: TLS was asked for (a tls:// URL or a tls_* setting) but the server does "
    "not offer it; nothing was sent. Enable TLS on the server, or use nats:// "
    "without tls_* settings"
)


def tls_wanted(cfg: NatsConfig) -> bool:
    """Whether the configuration asks for TLS: a tls:// URL or any tls_* setting."""
    return bool(cfg.tls_ca or cfg.tls_cert or cfg.tls_key) or any(
        url.lower().startswith("tls://") for url in cfg.servers
    )


def tls_context(cfg: NatsConfig) -> ssl.SSLContext:
    """The TLS context of `cfg`'s tls_ca / tls_cert / tls_key.

    Raises:
        ConfigError: a file is missing or is not what its setting says.
    """
    for key in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(cfg, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"bus.nats.{key}: no such file {path!r}")
    if cfg.tls_key and not cfg.tls_cert:
        raise ConfigError("bus.nats.tls_key is set without bus.nats.tls_cert")
    try:
        context = ssl.create_default_context(cafile=cfg.tls_ca)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"bus.nats.tls_ca: {cfg.tls_ca!r} is not a PEM CA bundle ({exc})"
        ) from exc
    if cfg.tls_cert:
        try:
            context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"bus.nats.tls_cert/tls_key: {cfg.tls_cert!r} is not a PEM certificate "
                f"with its key ({exc.reason or exc})"
            ) from exc
    return context


def auth_options(cfg: NatsConfig) -> dict[str, Any]:
    """nats-py's connect options for `cfg`'s credentials and TLS.

    Raises:
        ConfigError: a TLS file is missing or not what its setting says.
    """
    options: dict[str, Any] = {}
    if cfg.credentials:
        options["user_credentials"] = cfg.credentials
    if cfg.nkey_seed:
        options["nkeys_seed_str"] = cfg.nkey_seed
    if cfg.user is not None:
        options["user"] = cfg.user
    if cfg.password is not None:
        options["password"] = cfg.password
    if cfg.token is not None:
        options["token"] = cfg.token
    if cfg.tls_ca or cfg.tls_cert:
        options["tls"] = tls_context(cfg)
    return options


NKEYS_EXTRA = "pip install 'angzarr-es[nkeys]'"


def _creds_block(name: str) -> re.Pattern[str]:
    """The first line of a .creds file's `-----BEGIN <name>-----` block."""
    return re.compile(rf"-{{3,}}BEGIN {name}-{{3,}}\s*?\n\s*(\S+)")


def check_credentials(cfg: NatsConfig) -> None:
    """Check `credentials` and `nkey_seed` before connecting: nats-py would
    fail with the nkeys package's own exception, or only once a server asks
    for a signature.

    Raises:
        ConfigError: the nkeys package is missing, the seed is not one, or
            the .creds file is missing or not one.
    """
    if not (cfg.credentials or cfg.nkey_seed):
        return
    key = "bus.nats.credentials" if cfg.credentials else "bus.nats.nkey_seed"
    try:
        import nkeys
    except ImportError as exc:
        raise ConfigError(
            f"{key} needs the nkeys package, which cannot be imported ({exc}): {NKEYS_EXTRA}"
        ) from exc
    if cfg.nkey_seed:
        _check_seed(nkeys, cfg.nkey_seed.strip().encode(), "bus.nats.nkey_seed is not")
    if cfg.credentials:
        path = cfg.credentials
        try:
            text = Path(path).read_text(errors="replace")
        except OSError as exc:
            raise ConfigError(
                f"bus.nats.credentials: cannot read {path!r}: {exc.strerror or exc}"
            ) from exc
        jwt = _creds_block("NATS USER JWT").search(text)
        seed = _creds_block("USER NKEY SEED").search(text)
        if jwt is None or seed is None:
            raise ConfigError(
                f"bus.nats.credentials: {path!r} is not a NATS .creds file (it needs a "
                "user JWT and a user nkey seed, as `nsc generate creds` writes them)"
            )
        _check_seed(
            nkeys, seed.group(1).encode(), f"bus.nats.credentials: the seed in {path!r} is not"
        )


def _check_seed(nkeys: Any, seed: bytes, what: str) -> None:
    """Raises:
    ConfigError: `seed` is not an nkey seed (the message never shows it)."""
    try:
        nkeys.from_seed(bytearray(seed)).wipe()
    except (nkeys.NkeysError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"{what} a valid nkey seed ({type(exc).__name__}): a user's seed is 58 "
            "characters starting with SU, as `nk -gen user` or `nsc` print it"
        ) from None

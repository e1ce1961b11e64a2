"""Where the tool sends its requests and with which credentials.

Secrets come from the environment or a `.env` file only, held as `SecretStr` so that no print,
log line or exception can show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from onboard import contract
from onboard.errors import ConfigError

SANDBOX_URL = "https://api.sandbox.voluespark.com" + contract.base_path()
PRODUCTION_URL = "https://api.voluespark.com" + contract.base_path()
TOKEN_URL = "https://auth.identity.volue.com/connect/token"
LOCAL_HOST = "http://emulator.local"

ENVIRONMENTS = ("sandbox", "production", "local")


class Credentials(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPARK_", env_file=".env", extra="ignore")

    client_id: str | None = None
    client_secret: SecretStr | None = None


class Tuning(BaseSettings):
    """How patiently the client retries; tests and impatient users set `ONBOARD_RETRY_*`."""

    model_config = SettingsConfigDict(env_prefix="ONBOARD_", env_file=".env", extra="ignore")

    retry_base: float = Field(0.5, gt=0, description="first backoff, seconds (full jitter)")
    retry_cap: float = Field(30.0, gt=0, description="longest single backoff, seconds")
    retry_attempts: int = Field(8, ge=1, description="attempts per request before the API counts as down")
    retry_deadline: float = Field(120.0, gt=0, description="seconds one request may spend retrying")
    timeout: float = Field(60.0, gt=0, description="seconds to wait for one answer")


def load(model: type[BaseSettings], what: str, flags: bool = False, **given):
    """Settings from the environment, `.env` and `given`; a wrong value is a message, not a traceback.
    With `flags`, values are named as the command line's flags."""
    env_file = Path(model.model_config.get("env_file") or ".env").absolute()
    try:
        return model(**given)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read {env_file}: it is not UTF-8 text (byte {exc.object[exc.start]:#04x} "
                          f"at offset {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {env_file}: {exc.strerror}") from None
    except ValidationError as exc:
        lines = [f"invalid {what}:"]
        for error in exc.errors():
            name = "_".join(str(p) for p in error["loc"])
            name = "--" + name.replace("_", "-") if flags else name
            lines.append(f"  {name}: {error['msg']} (got {error.get('input')!r})")
        raise ConfigError("\n".join(lines)) from None


@dataclass(frozen=True)
class Target:
    """The API a run talks to."""

    env: str
    base_url: str
    token_url: str
    client_id: str
    client_secret: SecretStr

    def __repr__(self) -> str:
        return (f"Target(env={self.env!r}, base_url={masked(self.base_url)!r}, token_url={masked(self.token_url)!r}, "
                f"client_id={self.client_id!r}, client_secret=SecretStr('**********'))")

    @property
    def local(self) -> bool:
        return self.env == "local"

    @property
    def production(self) -> bool:
        """The production tenant, named by `--env production` or by its URL."""
        return is_production(self.env, self.base_url)

    @property
    def shown_base_url(self) -> str:
        """The base URL as it may be shown and stored (summary, journal): its password masked."""
        return masked(self.base_url)

    @property
    def secrets(self) -> tuple[str, ...]:
        """What no message may show: the client secret and the passwords of the URLs."""
        passwords = (unquote(urlsplit(url).password or "") for url in (self.base_url, self.token_url))
        return (self.client_secret.get_secret_value(), *(p for p in passwords if p))


def is_production(env: str, base_url: str | None = None) -> bool:
    """`--env production`, or the production API's host given as `--base-url` under another --env."""
    return env == "production" or (base_url is not None and _host(base_url) == _host(PRODUCTION_URL))


def _host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def masked(url: str) -> str:
    """`url` with the password of its `user:password@` part replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{host}").geturl()


def _url(value: str | None, flag: str) -> str | None:
    if value is None:
        return None
    import httpx

    try:
        httpx.URL(value), urlsplit(value).port  # the parsers the URL will meet
    except (httpx.InvalidURL, ValueError) as exc:
        raise ConfigError(f"{flag} is not a valid URL ({exc})") from None
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{flag} {masked(value)!r} is not an http:// or https:// URL")
    return value


def target(env: str, base_url: str | None = None, token_url: str | None = None, client_id: str | None = None,
           client_secret: str | SecretStr | None = None) -> Target:
    """Resolve `--env`, `--base-url` and `--token-url` with the credentials given, else those of the
    environment (or `.env`)."""
    if env not in ENVIRONMENTS:
        raise ConfigError(f"env {env!r} is none of {', '.join(ENVIRONMENTS)}")
    base_url, token_url = _url(base_url, "--base-url"), _url(token_url, "--token-url")
    given = {k: v for k, v in (("client_id", client_id), ("client_secret", client_secret)) if v is not None}
    credentials = load(Credentials, "SPARK_* settings", **given)
    if env == "local":
        return Target(
            env,
            base_url or LOCAL_HOST + contract.base_path(),
            token_url or LOCAL_HOST + "/connect/token",
            credentials.client_id or "local",
            credentials.client_secret or SecretStr("local"),
        )
    if not credentials.client_id or not credentials.client_secret:
        missing = [n for n, v in (("SPARK_CLIENT_ID", credentials.client_id),
                                  ("SPARK_CLIENT_SECRET", credentials.client_secret)) if not v]
        raise ConfigError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: put the client "
            "credentials from the Spark Portal in the environment or in a .env file "
            "(or use --env local, env='local' from Python, to rehearse against the emulator)"
        )
    default = PRODUCTION_URL if env == "production" else SANDBOX_URL
    return Target(env, (base_url or default).rstrip("/"), token_url or TOKEN_URL,
                  credentials.client_id, credentials.client_secret)

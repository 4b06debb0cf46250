"""The OpenADR 3 VEN's configuration keys (``ven.*``) and its resolved settings.

:class:`Oadr3Keys` is the part of the ``ven`` section the 3.x VEN adds; the bridge's config
embeds it. :meth:`Oadr3Keys.settings` reads the secrets from the environment and names the
key and the variable when one is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Version = Literal["3.0.1", "3.1.0"]


class _Keys(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthKeys(_Keys):
    """``ven.auth``: OAuth2 client credentials, or a static bearer token, or neither."""

    client_id: str | None = Field(default=None, min_length=1)
    client_secret_env: str | None = Field(default=None, min_length=1)
    token_url: str | None = None  # none: discovered via GET {vtn_url}/auth/server
    bearer_token_env: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_way(self) -> AuthKeys:
        if bool(self.client_id) != bool(self.client_secret_env):
            raise ValueError("client_id and client_secret_env go together: give both or "
                             "neither")
        if self.client_id and self.bearer_token_env:
            raise ValueError("give client_id/client_secret_env or bearer_token_env, not both")
        if self.token_url is not None and not self.token_url.startswith(("http://",
                                                                          "https://")):
            raise ValueError("token_url must start with http:// or https://")
        return self


class WebhookKeys(_Keys):
    """``ven.webhook``: where the VTN's notifications arrive (subscriptions), if anywhere."""

    host: str = "127.0.0.1"
    port: int = Field(default=8089, ge=1, le=65535)
    path: str = Field(default="/openadr3/notifications", pattern=r"^/")
    # the callback URL the VTN calls: this endpoint as the VTN reaches it
    public_url: str
    tls_cert: str | None = None  # PEM chain and key: serve https
    tls_key: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> WebhookKeys:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if not self.public_url.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        return self


class Oadr3Keys(_Keys):
    """The ``ven`` keys of the OpenADR 3 VEN (besides vtn_url, ven_name, groups, ...)."""

    protocol: Literal["2.0b", "3"] = "2.0b"
    auth: AuthKeys = Field(default_factory=AuthKeys)
    poll_interval_s: float = Field(default=10, gt=0, le=3600)
    # 3.0.1 and 3.1.0 differ in resources, targets and reports; none: from vtn_url
    openadr_version: Version | None = None
    webhook: WebhookKeys | None = None

    @field_validator("protocol", mode="before")
    @classmethod
    def _unquoted(cls, value: object) -> object:
        # YAML reads an unquoted 3 as a number; it can only mean "3"
        return "3" if isinstance(value, int | float) and value == 3 else value

    def settings(self, *, vtn_url: str, ven_name: str, resource_id: str,
                 group_ids: Iterable[str] = (), resource_ids: Iterable[str] = (),
                 retry_max_s: float = 60, voltage_phases: tuple[str, ...] = (),
                 environ: Mapping[str, str] | None = None) -> Ven3Settings:
        """Resolved settings; :class:`MissingSecret` names the key and variable missing."""
        env = os.environ if environ is None else environ
        secret = token = None
        if self.auth.client_secret_env:
            secret = env.get(self.auth.client_secret_env)
            if not secret:
                raise MissingSecret("ven.auth.client_secret_env", self.auth.client_secret_env)
        if self.auth.bearer_token_env:
            token = env.get(self.auth.bearer_token_env)
            if not token:
                raise MissingSecret("ven.auth.bearer_token_env", self.auth.bearer_token_env)
        return Ven3Settings(
            vtn_url=vtn_url, ven_name=ven_name, resource_id=resource_id,
            version=self.openadr_version or version_of(vtn_url),
            client_id=self.auth.client_id, client_secret=secret,
            token_url=self.auth.token_url, bearer_token=token,
            poll_interval=timedelta(seconds=self.poll_interval_s),
            retry_max=timedelta(seconds=retry_max_s),
            group_ids=frozenset(group_ids), resource_ids=frozenset(resource_ids),
            voltage_phases=voltage_phases, webhook=self.webhook,
        )


class MissingSecret(ValueError):
    def __init__(self, key: str, variable: str) -> None:
        super().__init__(f"{key}: the environment variable {variable} is not set (or empty); "
                         f"export it before starting drbridge")
        self.key = key
        self.variable = variable


def version_of(vtn_url: str) -> Version:
    """3.0.1 when the VTN's base URL says so (``.../3.0.1``, ``.../3.0``), else 3.1.0."""
    path = vtn_url.rstrip("/").rsplit("/", 1)[-1]
    return "3.0.1" if path.startswith("3.0") else "3.1.0"


@dataclass(frozen=True)
class Ven3Settings:
    vtn_url: str
    ven_name: str
    resource_id: str  # the site's resource on the VTN
    version: Version = "3.1.0"
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    token_url: str | None = None
    bearer_token: str | None = field(default=None, repr=False)
    poll_interval: timedelta = timedelta(seconds=10)
    retry_initial: timedelta = timedelta(seconds=1)
    retry_max: timedelta = timedelta(seconds=60)
    group_ids: frozenset[str] = frozenset()  # each is a resource of the VEN on the VTN
    resource_ids: frozenset[str] = frozenset()  # configured resources events may name
    voltage_phases: tuple[str, ...] = ()
    sample_interval: timedelta = timedelta(seconds=10)  # site samples for reports
    webhook: WebhookKeys | None = None
    # refresh the programs (names, descriptors, subscriptions) this often
    program_refresh: timedelta = timedelta(minutes=10)

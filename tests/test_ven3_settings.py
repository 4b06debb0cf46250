"""The OpenADR 3 VEN's configuration keys and the settings resolved from them."""

import pytest
from pydantic import ValidationError

from ven.oadr3.settings import MissingSecret, Oadr3Keys, version_of


def keys(**ven):
    return Oadr3Keys.model_validate(ven)


def resolve(config: Oadr3Keys, environ: dict[str, str], url: str = "https://vtn.example/3.1.0"):
    return config.settings(vtn_url=url, ven_name="site-a", resource_id="site-a",
                           group_ids=["fleet"], retry_max_s=30, environ=environ)


def test_client_credentials_come_from_the_environment():
    config = keys(protocol="3", auth={"client_id": "site-a",
                                      "client_secret_env": "DRBRIDGE_OADR3_SECRET"})
    settings = resolve(config, {"DRBRIDGE_OADR3_SECRET": "s3cret"})
    assert (settings.client_id, settings.client_secret) == ("site-a", "s3cret")
    assert settings.poll_interval.total_seconds() == 10 and settings.version == "3.1.0"
    assert settings.group_ids == {"fleet"} and settings.retry_max.total_seconds() == 30
    assert "s3cret" not in repr(settings)
    with pytest.raises(MissingSecret) as missing:
        resolve(config, {})
    assert missing.value.key == "ven.auth.client_secret_env"
    assert "DRBRIDGE_OADR3_SECRET" in str(missing.value)


@pytest.mark.parametrize("auth, why", [
    ({"client_id": "a"}, "go together"),
    ({"client_secret_env": "X"}, "go together"),
    ({"client_id": "a", "client_secret_env": "X", "bearer_token_env": "Y"}, "not both"),
    ({"token_url": "vtn.example/token"}, "http"),
    ({"client_secret": "in the config"}, "Extra inputs"),
])
def test_inconsistent_auth_is_refused(auth, why):
    with pytest.raises(ValidationError, match=why):
        keys(auth=auth)


def test_other_keys_are_checked():
    with pytest.raises(ValidationError):
        keys(protocol="3.1")
    with pytest.raises(ValidationError):
        keys(poll_interval_s=0)
    with pytest.raises(ValidationError, match="public_url"):
        keys(webhook={"port": 8089})
    with pytest.raises(ValidationError, match="go together"):
        keys(webhook={"public_url": "https://gw.example/n", "tls_cert": "c.pem"})
    assert keys().protocol == "2.0b"


def test_the_version_follows_the_url_unless_given():
    assert version_of("https://vtn.example/openadr3/3.0.1") == "3.0.1"
    assert version_of("https://vtn.example/openadr3/3.1.0/") == "3.1.0"
    assert version_of("https://vtn.example/api") == "3.1.0"
    pinned = keys(openadr_version="3.0.1")
    assert resolve(pinned, {}, url="https://vtn.example/api").version == "3.0.1"

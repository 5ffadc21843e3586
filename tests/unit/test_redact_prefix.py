"""redact() skips the regex when the secret prefix is absent; the answer must not change."""

from __future__ import annotations

import random

from frontdoor_pki.tokens import _REDACT_RE, new_secret, redact


def test_redact_equals_the_regex_on_any_text():
    rng = random.Random(3)
    alphabet = "crt_%-AZaz09 /?=&\u00e9"
    samples = ["", "crt_", "crt", "xcrt_y", "/token/" + new_secret(), "a %s b %s" % (new_secret(), new_secret())]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(2000)]
    for text in samples:
        assert redact(text) == _REDACT_RE.sub("crt_[REDACTED]", text), text
    secret = new_secret()
    assert secret not in redact("POST /x/" + secret) and "crt_[REDACTED]" in redact("POST /x/" + secret)

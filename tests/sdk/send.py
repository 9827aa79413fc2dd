"""Sends a lead's journey to a nurtured daemon through a real tracking SDK.

    python send.py SDK URL WRITE_KEY TAG [bad]

SDK is `segment` (segment-analytics-python) or `rudderstack` (rudder-sdk-python,
which gzips its batches by default; that is kept). TAG makes the ids of this run
unique: the lead is TAG@sdk.example with userId TAG-crm. With `bad`, sends one event
the daemon refuses and prints the error the SDK reports. Exits non-zero when the SDK
reports an error it should not have.
"""

import datetime
import sys

sdk, url, key, tag = sys.argv[1:5]
bad = len(sys.argv) > 5 and sys.argv[5] == "bad"
errors = []


def on_error(error, batch):
    errors.append(error)


if sdk == "segment":
    from segment.analytics import Client

    client = Client(key, host=url, on_error=on_error, max_retries=0, upload_interval=0.1)
elif sdk == "rudderstack":
    from rudderstack.analytics import Client

    client = Client(key, host=url, on_error=on_error, max_retries=0, upload_interval=0.1)
    assert client.gzip, "rudder-sdk-python is expected to gzip by default"
else:
    sys.exit(f"unknown SDK {sdk!r}: use segment or rudderstack")

now = datetime.datetime.now(datetime.timezone.utc)


def ago(minutes):
    return now - datetime.timedelta(minutes=minutes)


user = f"{tag}-crm"
visitor = f"{tag}-visitor"
if bad:
    # A userId no lead has, and no anonymousId: refused with 400.
    client.track(user_id=f"{tag}-nobody", event="Webinar Attended")
    client.shutdown()
    for e in errors:
        print(f"status={getattr(e, 'status', None)} code={getattr(e, 'code', None)} "
              f"message={getattr(e, 'message', e)}")
    sys.exit(0 if errors else "the refused event was not reported")

# Before sign-up: an anonymous visitor views the pricing page, downloads the price
# list and is put in a group (account) by the website.
client.page(anonymous_id=visitor, name="Pricing",
            properties={"url": "https://www.acme.example/pricing"}, timestamp=ago(30))
client.track(anonymous_id=visitor, event="Content Downloaded",
             properties={"asset": "Price list 2026", "type": "price_brochure"},
             timestamp=ago(28))
client.group(anonymous_id=visitor, group_id=f"{tag}-account",
             traits={"name": f"{tag} GmbH", "industry": "Maschinenbau", "employees": 180,
                     "plan": "enterprise"})
# Sign-up: identify with the same anonymousId joins that history to the lead.
client.identify(user_id=user, anonymous_id=visitor, timestamp=ago(20),
                traits={"email": f"{tag}@sdk.example", "firstName": "Sdk",
                        "lastName": tag.capitalize(), "title": "Head of Marketing"})
client.track(user_id=user, event="Webinar Attended", timestamp=ago(10))
client.page(user_id=user, name="Case study",
            properties={"url": "https://www.acme.example/case-studies/acme"}, timestamp=ago(9))
client.screen(user_id=user, name="Dashboard", timestamp=ago(8))
# The same person on another device: anonymous, then aliased to the userId.
client.page(anonymous_id=f"{visitor}-2", name="Landing page",
            properties={"url": "https://www.acme.example/lp/crm"}, timestamp=ago(5))
client.alias(previous_id=f"{visitor}-2", user_id=user)
client.shutdown()

if errors:
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
print("sent")

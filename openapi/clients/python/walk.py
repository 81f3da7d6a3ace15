"""A scheduling system's round trip through the generated Python client, and nothing else.

Creates a plan, reads it back, replaces it with If-Match (and sees 412 with a stale one),
asks for a recommendation, creates a referral idempotently and lists plans with a cursor.
Every response is parsed into the generated models; an undocumented status raises.

Run by scripts/contract.sh with TELEMENTAL_URL and TELEMENTAL_TOKEN set and the generated
package `telemental_client` on PYTHONPATH.
"""

import os
import uuid

from telemental_client import AuthenticatedClient
from telemental_client.api.plans import create_plan, get_plan, list_plans, replace_plan
from telemental_client.api.recommendations import recommend_modality
from telemental_client.api.referrals import create_referral
from telemental_client.models import (
    AppointmentType,
    Modality,
    Plan,
    PlanList,
    PlanRequest,
    Problem,
    RecommendationRequest,
    RecommendationResponse,
    Referral,
    ReferralInput,
    ReferralReason,
    ReferralStatus,
    Urgency,
)
from telemental_client.types import Response

client = AuthenticatedClient(
    base_url=os.environ["TELEMENTAL_URL"],
    token=os.environ["TELEMENTAL_TOKEN"],
    raise_on_unexpected_status=True,
)
run = uuid.uuid4().hex[:8]


def expect(response: Response, status: int, model: type):
    """The parsed body, after checking the status and the model it was parsed into."""
    assert response.status_code == status, (response.status_code, response.content)
    assert isinstance(response.parsed, model), type(response.parsed)
    return response.parsed


def plan_request(subject: str) -> PlanRequest:
    return PlanRequest.from_dict(
        {
            "subject": subject,
            "initial_conversation": {"held_on": "2026-11-20", "held_by": "Practitioner/9"},
            "preferences": {"default": ["video", "telephone", "in_person"]},
            "resources": {"devices": ["smartphone"], "connectivity": "reliable", "digital_skills": "basic"},
            "backup_contact": {"method": "telephone", "number": "+447700900123"},
        }
    )


with client:
    # Create a plan; the ETag is its version.
    subject = f"Patient/py-{run}"
    created = create_plan.sync_detailed(client=client, body=plan_request(subject))
    plan = expect(created, 201, Plan)
    assert created.headers["etag"] == f'"{plan.version}"' and plan.version == 1
    assert created.headers["location"] == f"/v1/plans/{plan.id}"

    # Read it back.
    read = get_plan.sync_detailed(plan.id, client=client)
    again = expect(read, 200, Plan)
    assert again.to_dict() == plan.to_dict()

    # Replace it with what was read (server fields included: they are ignored), If-Match.
    body = PlanRequest.from_dict(again.to_dict())
    body.review_interval_days = 60
    replaced = replace_plan.sync_detailed(plan.id, client=client, body=body, if_match=read.headers["etag"])
    new = expect(replaced, 200, Plan)
    assert new.version == 2 and new.review_interval_days == 60

    # Someone else wrote first: the stale ETag gets 412 and the current version.
    stale = replace_plan.sync_detailed(plan.id, client=client, body=body, if_match=read.headers["etag"])
    problem = expect(stale, 412, Problem)
    assert problem.current_version == 2

    # A recommendation for a therapy session, explained by rule.
    rec = expect(
        recommend_modality.sync_detailed(
            client=client,
            body=RecommendationRequest(subject=subject, appointment_type=AppointmentType.THERAPY),
        ),
        200,
        RecommendationResponse,
    )
    assert rec.recommended_modality in set(Modality) and rec.plan_version == 2
    assert all(reason.rule for option in rec.options for reason in option.reasons)

    # A referral, retried with the same Idempotency-Key: one referral, the first response.
    referral = ReferralInput(
        subject=subject, reason=ReferralReason.NOT_ACCESSIBLE, urgency=Urgency.URGENT
    )
    key = f"py-{run}"
    first = create_referral.sync_detailed(client=client, body=referral, idempotency_key=key)
    retry = create_referral.sync_detailed(client=client, body=referral, idempotency_key=key)
    one, two = expect(first, 201, Referral), expect(retry, 201, Referral)
    assert one.id == two.id and one.status == ReferralStatus.REQUESTED
    assert retry.headers.get("idempotent-replayed") == "true"
    assert "idempotent-replayed" not in first.headers

    # Two more plans, then every plan page by page with the cursor.
    for n in range(2):
        expect(create_plan.sync_detailed(client=client, body=plan_request(f"{subject}-{n}")), 201, Plan)
    seen, cursor, pages = [], None, 0
    while True:
        kwargs = {"cursor": cursor} if cursor else {}
        page = expect(list_plans.sync_detailed(client=client, limit=2, **kwargs), 200, PlanList)
        pages += 1
        seen += [p.subject for p in page.items]
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    assert pages >= 2 and {subject, f"{subject}-0", f"{subject}-1"} <= set(seen), seen

print(f"python client: plan {plan.id} v{new.version}, {rec.recommended_modality}, referral {one.id}, {pages} pages")

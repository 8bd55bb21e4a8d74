"""/v1/notifications: a tenant's notification subscriptions (farm.notify) and dead letters.

Maintainers manage them, and only they list them: a chat webhook's URL is a credential
(whoever holds it may post to the channel), and the list names the team's addresses. The
admin names a tenant with `?tenant=`; a tenant's token reaches its own only (403 for
another's). A chat or webhook URL must be on the tenant's webhook allowlist, as a job's
callback_url must (a webhook also needs the tenant's webhook_secret, which signs it); an
e-mail subscription needs the farm's SMTP server (notify.smtp_host).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, status
from pydantic import BaseModel

from farm.api.deps import Config, Who
from farm.api.errors import COMMON, CONFLICT, FORBIDDEN, NOT_FOUND
from farm.errors import Forbidden, InvalidInput
from farm.notify import DeadLetter, Subscription, SubscriptionSpec
from farm.roles import Role, needs
from farm.settings import Settings, TenantConfig
from farm.store.notify import SUBSCRIPTION_ID, NotifyBook
from farm.webhooks import allowed, permitted

router = APIRouter(prefix="/v1/notifications", tags=["notifications"], responses=COMMON)

TenantQuery = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", description=(
    "the admin: this tenant's (default: the admin's own); a tenant may name only itself"))]  # fmt: skip


@dataclass(frozen=True)
class Notifications:
    book: NotifyBook
    tenants: dict[str, TenantConfig]


async def _notifications(request: Request) -> Notifications:
    return Notifications(request.app.state.notify, request.app.state.tenants)


Book = Annotated[Notifications, Depends(_notifications)]


class SubscriptionsPublic(BaseModel):
    subscriptions: list[Subscription]


class DeadLettersPublic(BaseModel):
    dead_letters: list[DeadLetter]


def _whose(who: Who, tenant: str | None) -> str:
    if tenant is None or tenant == who.tenant:
        return who.tenant
    if not who.admin:
        raise Forbidden("a tenant manages its own notifications only")
    return tenant


def check(spec: SubscriptionSpec, tenant: TenantConfig | None, config: Settings) -> None:
    """Refuse a channel the tenant may not use (InvalidInput -> 422 naming the field)."""
    if spec.chat is not None and not (tenant is not None and allowed(spec.chat, tenant.webhook_hosts)):
        raise InvalidInput("the chat webhook's host is not on this tenant's webhook allowlist (tenants[].webhook_hosts)",
                           ("body", "chat"))  # fmt: skip
    if spec.webhook is not None and not permitted(spec.webhook, tenant):
        raise InvalidInput("a webhook needs the tenant's webhook_secret, and its host on the tenant's webhook allowlist",
                           ("body", "webhook"))  # fmt: skip
    if spec.email is not None and config.notify.smtp_host is None:
        raise InvalidInput("this farm sends no mail: notify.smtp_host is not set", ("body", "email"))


@router.post("", openapi_extra=needs(Role.MAINTAINER, "notify.add"), status_code=status.HTTP_201_CREATED,
             response_model=Subscription, responses={**FORBIDDEN, **CONFLICT})  # fmt: skip
def add(spec: SubscriptionSpec, who: Who, config: Config, notifications: Book, tenant: TenantQuery = None) -> Subscription:
    """Subscribe the tenant to ends of its jobs and runs (`on`: failed, fixed, always),
    optionally of one branch (labels.branch), on one channel: `chat`, `webhook` or `email`.
    A tenant has at most notify.max_subscriptions (409 past it)."""
    whose = _whose(who, tenant)
    check(spec, notifications.tenants.get(whose), config)
    return notifications.book.add(whose, spec, by=who.token_name or who.tenant, most=config.notify.max_subscriptions)


@router.get("", openapi_extra=needs(Role.MAINTAINER), response_model=SubscriptionsPublic, responses=FORBIDDEN)
def list_subscriptions(who: Who, notifications: Book, tenant: TenantQuery = None) -> SubscriptionsPublic:
    """The tenant's subscriptions, oldest first."""
    return SubscriptionsPublic(subscriptions=notifications.book.subscriptions(_whose(who, tenant)))


@router.get("/dead-letters", openapi_extra=needs(Role.MAINTAINER), response_model=DeadLettersPublic, responses=FORBIDDEN)
def dead_letters(who: Who, notifications: Book, tenant: TenantQuery = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> DeadLettersPublic:  # fmt: skip
    """Deliveries given up after notify.max_attempts (or at once, when retrying could not
    help), newest first, with the last error; the newest notify.dead_letters_max are kept."""
    return DeadLettersPublic(dead_letters=notifications.book.dead_letters(_whose(who, tenant), limit))


@router.delete("/{sub_id}", openapi_extra=needs(Role.MAINTAINER, "notify.remove"), response_model=Subscription,
               responses={**FORBIDDEN, **NOT_FOUND})  # fmt: skip
def remove(sub_id: Annotated[str, Path(pattern=SUBSCRIPTION_ID, description="the subscription's id")], who: Who,
           notifications: Book, tenant: TenantQuery = None) -> Subscription:  # fmt: skip
    """Remove a subscription (answers it); its deliveries not sent yet are dropped."""
    return notifications.book.remove(_whose(who, tenant), sub_id)

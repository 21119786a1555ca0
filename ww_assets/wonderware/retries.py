"""How assets retry: transient faults in place with backoff, then the step's retry policy;
permanent faults fail the step at once, with no retry of any kind."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import dagster as dg

from ww_assets.config import Settings
from ww_assets.resilience import Backoff, Fault, classify, retry_transient

T = TypeVar("T")

def step_retry_policy(settings: Settings) -> dg.RetryPolicy:
    """After the in-place retries are spent, the step is retried (WONDERWARE_STEP_RETRIES
    times, exponential delays from WONDERWARE_STEP_RETRY_DELAY, with jitter)."""
    return dg.RetryPolicy(
        max_retries=settings.step_retries,
        delay=settings.step_retry_delay_s,
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


def with_retries(
    context: dg.AssetExecutionContext, what: str, action: Callable[[], T], backoff: Backoff
) -> T:
    """`action`, retried in place on transient faults; a permanent fault becomes a
    `dg.Failure` that names `what` and is never retried."""

    def log(attempt: int, wait: float, error: BaseException) -> None:
        context.log.warning(
            f"{what}: transient failure ({error}); retry {attempt}/{backoff.attempts - 1} "
            f"in {wait:.1f} s"
        )

    with permanent_faults_fail_now(what):
        return retry_transient(action, backoff, on_retry=log)


@contextmanager
def permanent_faults_fail_now(what: str) -> Iterator[None]:
    """Turn a permanent fault raised inside into a `dg.Failure` that the step's retry policy
    does not retry; transient faults pass through to it unchanged."""
    try:
        yield
    except dg.Failure:
        raise
    except Exception as error:
        if classify(error) is Fault.PERMANENT:
            raise dg.Failure(
                description=f"{what}: {error} (permanent: not retried)", allow_retries=False
            ) from error
        raise

"""Prometheus metrics of a provider outage, scraped over HTTP.

    python examples/metrics_exporter.py            # one run, then exit
    python examples/metrics_exporter.py --serve --port 9100   # keep serving

A policy with a breaker and a rate limiter guards calls to a fake
"vsphere/prod" provider. The provider goes down, the breaker opens, time
passes (a ManualClock, so no waiting), a probe half-opens it and the
provider's recovery closes it. After each phase the script scrapes its own
/metrics endpoint and prints the breaker's state and failure count, as
Prometheus would see them, and during the outage the whole scrape of the
provider's series.
"""

from __future__ import annotations

import argparse
import time
import urllib.request

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

import virtrigaud_resilience as vr


class FakeProvider:
    """A provider whose availability we switch by hand."""

    def __init__(self) -> None:
        self.up = True

    def describe_vm(self, name: str) -> str:
        if not self.up:
            raise vr.UnavailableError("vsphere endpoint unreachable")
        return f"{name}: running"


def scrape_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def scrape(url: str) -> dict[str, float]:
    """The breaker series for vsphere/prod, from one HTTP scrape."""
    text = scrape_text(url)
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("virtrigaud_circuit_breaker") and \
                    sample.labels.get("provider") == "prod":
                extra = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items())
                                 if k not in ("provider_type", "provider"))
                found[sample.name + (f"{{{extra}}}" if extra else "")] = sample.value
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="keep serving after the run")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (default)")
    args = parser.parse_args(argv)

    registry = prometheus_client.CollectorRegistry()
    vr.metrics.register(registry)
    server, thread = prometheus_client.start_http_server(args.port, addr="127.0.0.1",
                                                         registry=registry)
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    print(f"serving {url}")

    clock = vr.ManualClock()
    breaker = vr.CircuitBreaker("vm-operations", "vsphere", "prod",
                                vr.BreakerConfig(failure_threshold=3, reset_timeout=30,
                                                 half_open_max_calls=1), clock=clock)
    limiter = vr.RateLimiterRegistry(qps=100, burst=10, clock=clock).get("vsphere", "prod")
    policy = (vr.PolicyBuilder("describe-vm").with_circuit_breaker(breaker)
              .with_rate_limiter(limiter).with_clock(clock).build())
    vr.events.on_state_change(lambda b, old, new: print(f"  event: {b.name} {old.name} -> {new.name}"))
    provider = FakeProvider()

    def call() -> None:
        try:
            policy.execute(provider.describe_vm, "web-1")
        except vr.ProviderError as exc:
            print(f"  call failed: {type(exc).__name__}: {exc}")

    def phase(title: str) -> None:
        state = scrape(url)
        print(f"{title}: state={state['virtrigaud_circuit_breaker_state']:.0f} "
              f"failures_total={state['virtrigaud_circuit_breaker_failures_total']:.0f}")

    call()
    phase("healthy")
    provider.up = False
    for _ in range(4):  # three failures open it; the fourth call is rejected
        call()
    phase("outage")
    for line in scrape_text(url).splitlines():
        if 'provider="prod"' in line or 'policy="describe-vm"' in line:
            print(f"  | {line}")
    clock.advance(30)
    permit = breaker.try_acquire()  # a probe is admitted: half-open
    phase("probing")
    assert permit is not None
    provider.up = True
    permit.success()
    phase("recovered")
    for name, value in sorted(scrape(url).items()):
        print(f"  {name} {value:g}")

    if args.serve:
        print("serving until interrupted (Ctrl-C)")
        try:
            while thread.is_alive():
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    server.shutdown()
    server.server_close()
    vr.metrics.unregister(registry)


if __name__ == "__main__":
    main()

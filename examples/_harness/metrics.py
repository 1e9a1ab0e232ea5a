"""A server's Prometheus text, scraped once, with lookups by name and label."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Metrics:
    url: str
    text: str

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        """Labels and value of every sample called ``name``."""
        return [
            (sample.labels, sample.value)
            for family in text_string_to_metric_families(self.text)
            for sample in family.samples
            if sample.name == name
        ]

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels``."""
        return sum(
            value
            for found, value in self.samples(name)
            if all(found.get(key) == want for key, want in labels.items())
        )

    def by(self, name: str, label: str, **labels: str) -> dict[str, float]:
        """``name``'s samples (matching ``labels``) summed per value of ``label``."""
        out: dict[str, float] = {}
        for found, value in self.samples(name):
            if label in found and all(found.get(k) == want for k, want in labels.items()):
                out[found[label]] = out.get(found[label], 0.0) + value
        return out

    def lines(self, *prefixes: str) -> list[str]:
        """The exposition lines of the series whose names start with one of ``prefixes``."""
        return [line for line in self.text.splitlines() if line.startswith(prefixes)]

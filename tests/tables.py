"""A mixed customer table made here (nothing downloaded): numbers with gaps, categories
(few and many), an id column, a free-text support ticket (or none), and two targets that
depend on them, so a model that ignores a column, or reads one wrongly, measurably loses
accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd

COUNTRIES = ["NO", "SE", "DK", "FI", "DE", "FR", "ES", "IT"]
PLANS = ["basic", "pro", "enterprise"]
CHANNELS = [f"partner-{i:02d}" for i in range(40)]  # more than one_hot_max: embedded
# Support tickets: what churners write differs from what the others write.
UNHAPPY = [
    "cannot log in since the update",
    "billing charged me twice this month",
    "the export keeps failing with a timeout",
    "please cancel my subscription",
    "support never answered my last three emails",
    "too expensive for what we use",
]
HAPPY = ["how do I add a new team member", "great release, the new dashboard is fast",
         "can we get an invoice for the annual plan", "thanks for the quick fix yesterday",
         "is there an API for bulk uploads", "we would like to upgrade to more seats"]  # fmt: skip


def customers(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """`n` customers: `churn` (yes/no) and `spend` (a quantity) to predict."""
    rng = np.random.default_rng(seed)
    country = rng.choice(COUNTRIES, n, p=[0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05])
    plan = rng.choice(PLANS, n, p=[0.5, 0.35, 0.15])
    channel = rng.choice(CHANNELS, n)
    age = rng.integers(18, 80, n).astype(float)
    tenure = rng.integers(1, 120, n).astype(float)
    risky_channel = np.isin(channel, CHANNELS[::3])  # every third partner brings churners
    score = (
        1.5 * (plan == "basic")
        - 1.5 * (plan == "enterprise")
        + 1.2 * np.isin(country, ["DE", "FR"])
        + 1.8 * risky_channel
        - tenure / 40
        + 0.5 * rng.standard_normal(n)
    )
    unhappy = score + 0.8 * rng.standard_normal(n) > 0.3
    ticket = [
        f"{rng.choice(UNHAPPY if u else HAPPY)}. {rng.choice(UNHAPPY + HAPPY)}" if r > 0.15
        else None  # no ticket
        for u, r in zip(unhappy, rng.random(n), strict=True)
    ]  # fmt: skip
    age[rng.random(n) < 0.1] = np.nan  # gaps: imputed, with a missing flag
    tenure_seen = tenure.copy()
    tenure_seen[rng.random(n) < 0.05] = np.nan
    base = {"basic": 20.0, "pro": 60.0, "enterprise": 200.0}
    spend = np.array([base[p] for p in plan]) * (1 + tenure / 100) + rng.normal(0, 5, n)
    return pd.DataFrame(
        {
            "customer_id": [f"c{seed}-{i:06d}" for i in range(n)],
            "country": country,
            "plan": plan,
            "channel": channel,
            "age": age,
            "tenure_months": tenure_seen,
            "ticket": ticket,
            "spend": spend.round(2),
            "churn": np.where(score > 0.3, "yes", "no"),
        }
    )

"""A mixed customer table made here (nothing downloaded): numbers with gaps, categories
(few and many), an id column, and two targets that depend on all of them, so a model
that ignores a column, or reads one wrongly, measurably loses accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd

COUNTRIES = ["NO", "SE", "DK", "FI", "DE", "FR", "ES", "IT"]
PLANS = ["basic", "pro", "enterprise"]
CHANNELS = [f"partner-{i:02d}" for i in range(40)]  # more than one_hot_max: embedded


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
            "spend": spend.round(2),
            "churn": np.where(score > 0.3, "yes", "no"),
        }
    )

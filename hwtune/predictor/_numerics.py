"""Small numerical pieces shared by the fits: non-negative least squares and error figures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    # A list of floats or a 1-d numpy array: what the error figures take (they np.asarray it).
    Floats: TypeAlias = Sequence[float] | np.ndarray

__all__ = ["error_stats", "nnls", "rank_stats"]


def nnls(a: Any, b: Any) -> Any:
    """Non-negative least squares ``min |a x - b|, x >= 0`` with columns scaled to unit norm.

    NNLS converges badly when columns span ten orders of magnitude (MACs next to a count).
    """
    import numpy as np
    from scipy.optimize import nnls as _scipy_nnls

    norms = np.linalg.norm(a, axis=0)
    norms[norms == 0] = 1.0
    x, _ = _scipy_nnls(a / norms, b, maxiter=50 * a.shape[1])
    return x / norms


def error_stats(pred: Floats, meas: Floats) -> tuple[float, float, float]:
    """(median abs % error, share within 10%, Spearman rho; NaN when undefined)."""
    import numpy as np
    from scipy.stats import spearmanr

    p, m = np.asarray(pred, float), np.asarray(meas, float)
    rel = np.abs(p / m - 1.0)
    rho = float(spearmanr(p, m)[0]) if len(p) > 2 and np.ptp(p) > 0 and np.ptp(m) > 0 else float("nan")
    return float(np.median(rel) * 100.0), float(np.mean(rel <= 0.10)), rho


def rank_stats(pred: Floats, meas: Floats) -> dict[str, float]:
    """Spearman, Kendall, share within +-10% and +-20%, median abs % error of ``pred`` vs ``meas``."""
    import numpy as np
    from scipy.stats import kendalltau, spearmanr

    p, m = np.asarray(pred, float), np.asarray(meas, float)
    rel = np.abs(p / m - 1.0)
    varies = len(p) > 2 and np.ptp(p) > 0 and np.ptp(m) > 0
    return {
        "spearman": float(spearmanr(p, m)[0]) if varies else float("nan"),
        "kendall": float(kendalltau(p, m)[0]) if varies else float("nan"),
        "within_10pct": float(np.mean(rel <= 0.10)),
        "within_20pct": float(np.mean(rel <= 0.20)),
        "median_error_pct": float(np.median(rel) * 100.0),
    }

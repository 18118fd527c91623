"""Train the resolution-time model and export it to ONNX as scikit-learn users do.

The training set is a point-in-time join from Feast (each ticket sees the team's
features as they were when it was opened); the model is a plain scikit-learn
regressor; the export is skl2onnx's usual one: one [N, k] float input named X.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from feast import FeatureStore
from skl2onnx import to_onnx
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.metrics import mean_absolute_error

HERE = Path(__file__).parent
COLUMNS = ["priority", "words", "team_stats__open_tickets", "team_stats__avg_resolution_h_7d"]

store = FeatureStore(repo_path=str(HERE / "feature_repo"))
tickets = pd.read_parquet(HERE / "tickets.parquet")
train = store.get_historical_features(
    entity_df=tickets,
    features=["team_stats:open_tickets", "team_stats:avg_resolution_h_7d"],
    full_feature_names=True,
).to_df()
train = train.sort_values("event_timestamp", ignore_index=True)
train.to_parquet(HERE / "train.parquet")  # what `models init --training-data` reads

x = train[COLUMNS].to_numpy(np.float32)
y = train["hours"].to_numpy()
cut = int(len(train) * 0.8)  # the newest 20 % is the hold-out
model = GradientBoostingRegressor(random_state=0).fit(x[:cut], y[:cut])
print(f"hold-out MAE {mean_absolute_error(y[cut:], model.predict(x[cut:])):.3f} hours")

(HERE / "model.onnx").write_bytes(to_onnx(model, x[:1]).SerializeToString())
print("wrote model.onnx: input X [N, 4] in the order", COLUMNS)

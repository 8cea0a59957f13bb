"""SelectiveMAE / MAE pretraining on rs4m manifests."""

"""fedkd ClientApp: local training, prediction, privatize, encode."""

"""The synthetic demo data set: lesion-like images with masks and HAM10000's class imbalance,
generated deterministically, so that every notebook runs without the real data."""

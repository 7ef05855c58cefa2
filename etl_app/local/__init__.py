"""What serves development only: the embedded servers of ``etl-app run`` and the synthetic data generator."""

"""What serves development only: the embedded servers of ``etl-app run``, the synthetic data
generator, and the child processes of the tests and the benchmark."""

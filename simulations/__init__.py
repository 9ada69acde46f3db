"""fedkd runners: the ``fedkd`` command, simulations, sweeps and plots."""

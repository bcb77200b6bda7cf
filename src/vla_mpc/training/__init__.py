"""vla_mpc.training."""

"""vla_mpc.bench."""

"""vla_mpc.core."""

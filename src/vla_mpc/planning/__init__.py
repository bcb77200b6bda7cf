"""vla_mpc.planning."""

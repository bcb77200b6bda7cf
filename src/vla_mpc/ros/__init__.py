"""vla_mpc.ros."""

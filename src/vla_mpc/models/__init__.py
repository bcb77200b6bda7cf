"""vla_mpc.models."""

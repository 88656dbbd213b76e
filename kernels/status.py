"""The engine's result codes, one per trajectory, defined here once: the engine writes
them (``integrate.py``) and ``symode.errors.Status`` gives them their names in the API
and their messages. Plain integers, no numba: the Python side imports this module
without loading the engine."""

SUCCESS = 0
MAX_STEPS = 1  # the step count reached max_steps
STEP_UNDERFLOW = 2  # the step size fell below dt_min or the spacing of floats near t
NONFINITE = 3  # a NaN or inf in the state (or its derivative)
BAD_T_EVAL = 4  # the output times are not strictly monotone in the direction of integration

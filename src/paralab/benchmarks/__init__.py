"""Named benchmark suites (configs/benchmark/*.yaml): which runs to make and how to compare them."""

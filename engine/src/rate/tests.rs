//! Controller unit tests on a simulated clock.

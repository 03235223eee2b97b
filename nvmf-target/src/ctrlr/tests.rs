//! Unit tests of the controller state machine.

"""The HTTP layer both clients share: error classification, retry policy, rate limiters, clock."""

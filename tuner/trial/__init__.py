"""One trial: its runner and result, recorded surfaces and the replay runner that answers from them."""

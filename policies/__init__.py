"""Decision logic: DR events + site + fleet + time -> a plan of power limits. No I/O."""

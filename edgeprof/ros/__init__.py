"""ROS 2 pieces around the daemon: the rosbridge launcher, the topic/service names, and
the sample robot (a client of the daemon, not part of it)."""

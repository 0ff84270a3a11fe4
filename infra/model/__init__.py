"""The lab's model of a stack: data classes, stack settings, the stack-outputs contract."""

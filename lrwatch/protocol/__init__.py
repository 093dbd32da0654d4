"""What both ends of the channel share, standard library only:
the types, the channel's file protocol."""

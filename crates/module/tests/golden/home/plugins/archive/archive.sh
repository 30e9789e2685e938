#!/bin/sh
# Copies the file it is given to the archive directory.
exec cp "$3" "$2/"

#!/usr/bin/env bash
# Minecraft (minecraft_* tasks) has no adapter in this project, so this installs
# nothing. MineRL's PyPI package (0.4.4, a source package) builds Minecraft
# during installation, which needs a Java 8 JDK and downloads Gradle and
# Minecraft files from the internet; no adapter could be tested without it.
echo "Minecraft is not supported here: MineRL builds Minecraft with Java 8 and" \
  "downloads at install time; this project has no minecraft adapter. Nothing was" \
  "installed." >&2
exit 1

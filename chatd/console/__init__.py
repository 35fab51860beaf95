"""The web console's static files (index.html, console.js, console.css), served by
chatd/edge/console.py at ``/console/``. Plain DOM code, no build step and no library:
see docs/console.md."""

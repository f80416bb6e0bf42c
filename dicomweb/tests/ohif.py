"""What the viewer tests and benchmarks ask OHIF's page (plain text: no Django, benchmarks import it)."""

# True once a viewport's canvas shows an image (enough lit pixels), not a black viewport.
DRAWN = """
() => {
  const canvases = [...document.querySelectorAll('.cornerstone-canvas, [data-viewport-uid] canvas')];
  for (const canvas of canvases) {
    if (!canvas.width || !canvas.height) continue;
    const context = canvas.getContext('2d');
    if (!context) continue;
    const { data } = context.getImageData(0, 0, canvas.width, canvas.height);
    let lit = 0;
    for (let i = 0; i < data.length; i += 4 * 7) if (data[i] + data[i + 1] + data[i + 2] > 60) lit++;
    if (lit > 200) return true;
  }
  return false;
}
"""

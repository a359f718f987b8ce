/* The C API compiles as C99 and works from C: open the fixture bundle, run, read outputs, and get
 * an error string (not a crash) for a missing bundle.   test_c_api FIXTURES */
#include <stdio.h>
#include <string.h>

#include "xpr/xpr.h"

int main(int argc, char** argv) {
  char path[4096];
  xpr_engine* e = NULL;
  xpr_options o;
  int fails = 0;
  if (argc != 2) return 2;
  xpr_options_init(&o);
  o.device = XPR_DEVICE_CPU;
  o.intra_op_threads = 1;

  if (xpr_create("/nonexistent/bundle", &o, &e) != XPR_ERR_IO || e != NULL ||
      strstr(xpr_last_error(), "/nonexistent/bundle/manifest.json") == NULL) {
    fprintf(stderr, "missing bundle: wrong status or message '%s'\n", xpr_last_error());
    ++fails;
  }
  snprintf(path, sizeof path, "%s/bundle", argv[1]);
  if (xpr_create(path, &o, &e) != XPR_OK) {
    fprintf(stderr, "xpr_create: %s\n", xpr_last_error());
    return 1;
  }
  {
    int32_t rows = 0, cols = 0, r, c;
    static uint16_t px[448 * 224];
    xpr_image im;
    float prob = -1.f, logits[2];
    xpr_input_size(e, &rows, &cols);
    for (r = 0; r < rows; ++r)
      for (c = 0; c < cols; ++c) px[r * cols + c] = (uint16_t)(c < cols / 2 && r > 20 && r < rows - 20 ? 3000 : 50);
    xpr_image_init(&im);
    im.pixels = px;
    im.rows = rows;
    im.cols = cols;
    im.bits_stored = 12;
    im.name = "synthetic-c";
    if (xpr_run(e, &im, &im) != XPR_OK) {
      fprintf(stderr, "xpr_run: %s\n", xpr_last_error());
      ++fails;
    } else if (xpr_get_prob(e, &prob) != XPR_OK || prob < 0.f || prob > 1.f ||
               xpr_get_logits(e, logits, 2) != XPR_OK || xpr_num_selections(e) != 2) {
      fprintf(stderr, "outputs: prob %g, %d selections\n", prob, xpr_num_selections(e));
      ++fails;
    }
    printf("C API: backend %s, prob %.6f\n", xpr_backend_name(e), prob);
  }
  xpr_destroy(e);
  return fails;
}
